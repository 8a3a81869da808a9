/**
 * Regression (security): any process that reached the HTTP API could overwrite any file on the
 * gateway. POST /v1/restores with `to` set to a root-owned file wrote a backup of the caller's
 * choosing over it; a session migration (`rebound migrate --to`) likewise. Paths are now policy:
 * restore and migration file targets must resolve below a directory in targetDirs (--target-dir),
 * checked in the API before anything is opened (util/path-policy.ts): 403 ERR_PATH_NOT_ALLOWED.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig, validateConfig } from '../../src/config/schema.js';
import { ROLES } from '../../src/auth/permissions.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { silentLogger } from '../../src/util/log.js';
import { daemonApi, type DaemonApi } from '../helpers/api-auth.js';
import { makeImage, tempDir } from '../helpers/images.js';

let root: string;
let allowed: string;
let outside: string;
let victim: string;
let image: Buffer;
let daemon: Daemon;
const PRECIOUS = 'root-owned content that must survive\n';

let api: DaemonApi['api'];
let waitJob: DaemonApi['waitJob'];

function expectRefused(r: { status: number; body: any }, setting: string): void {
  expect(r.status).toBe(403);
  expect(r.body.error.code).toBe('ERR_PATH_NOT_ALLOWED');
  expect(r.body.error.message).toContain(setting);
}

beforeAll(async () => {
  root = fs.realpathSync(tempDir('rebound-path-restore-'));
  allowed = path.join(root, 'allowed');
  outside = path.join(root, 'outside');
  fs.mkdirSync(allowed);
  fs.mkdirSync(outside);
  image = makeImage(path.join(allowed, 'disk.img'), { size: 1 << 20, data: [[0, 8192], [512 * 1024, 4096]] });
  victim = path.join(outside, 'victim');
  fs.writeFileSync(victim, PRECIOUS, { mode: 0o600 });
  fs.symlinkSync(victim, path.join(allowed, 'restored.img'));
  const config = validateConfig({
    ...defaultConfig({}),
    dataDir: path.join(root, 'data'),
    nbd: [],
    http: '127.0.0.1:0',
    chunkSize: 256 * 1024,
    sourceDirs: [allowed],
    targetDirs: [allowed],
  });
  daemon = await Daemon.start(config, silentLogger);
  ({ api, waitJob } = await daemonApi(daemon));
  const b = await api('POST', '/v1/backups', { vm: 'vm1', disks: [{ name: 'd0', source: path.join(allowed, 'disk.img') }] });
  expect(await waitJob(b.body.id)).toMatchObject({ state: 'succeeded' });
});
afterAll(async () => {
  await daemon?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('POST /v1/restores writes below targetDirs only', () => {
  it('refuses a file outside targetDirs and leaves it unchanged', async () => {
    const r = await api('POST', '/v1/restores', { vm: 'vm1', disk: 'd0', to: victim });
    expectRefused(r, 'is not below a directory in targetDirs (--target-dir DIR)');
    expect(fs.readFileSync(victim, 'utf8')).toBe(PRECIOUS);
    expect((await api('GET', '/v1/jobs')).body.jobs.filter((j: any) => j.kind === 'restore')).toEqual([]);
  });

  it('refuses the overwrite for every role: a viewer may not restore, an operator and an admin not outside targetDirs', async () => {
    for (const role of ROLES) {
      const r = await api('POST', '/v1/restores', { vm: 'vm1', disk: 'd0', to: victim }, role);
      expect(r.status, role).toBe(403);
      expect(r.body.error.code, role).toBe(role === 'viewer' ? 'ERR_FORBIDDEN' : 'ERR_PATH_NOT_ALLOWED');
    }
    const anon = await fetch(`http://${daemon.endpoints.http}/v1/restores`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ vm: 'vm1', disk: 'd0', to: victim }),
    });
    expect(anon.status).toBe(401);
    expect(fs.readFileSync(victim, 'utf8')).toBe(PRECIOUS);
    expect((await api('GET', '/v1/jobs')).body.jobs.filter((j: any) => j.kind === 'restore')).toEqual([]);
  });

  it('refuses a symlink inside targetDirs that points outside, and the file it points at is unchanged', async () => {
    const r = await api('POST', '/v1/restores', { vm: 'vm1', disk: 'd0', to: path.join(allowed, 'restored.img') });
    expectRefused(r, `resolves to ${victim}`);
    expect(fs.readFileSync(victim, 'utf8')).toBe(PRECIOUS);
    expect(fs.lstatSync(path.join(allowed, 'restored.img')).isSymbolicLink()).toBe(true);
  });

  it('refuses a new file in a symlinked directory that leads outside', async () => {
    fs.symlinkSync(outside, path.join(allowed, 'elsewhere'));
    const r = await api('POST', '/v1/restores', { vm: 'vm1', disk: 'd0', to: path.join(allowed, 'elsewhere', 'planted.img') });
    expectRefused(r, 'targetDirs');
    expect(fs.existsSync(path.join(outside, 'planted.img'))).toBe(false);
  });

  it('still restores to a new file below targetDirs', async () => {
    const to = path.join(allowed, 'sub', 'new.img');
    fs.mkdirSync(path.dirname(to));
    const r = await api('POST', '/v1/restores', { vm: 'vm1', disk: 'd0', to });
    expect(r.status).toBe(202);
    expect(await waitJob(r.body.id)).toMatchObject({ state: 'succeeded' });
    expect(fs.readFileSync(to).equals(image)).toBe(true);
  });
});

describe('POST /v1/sessions/NAME/migrate writes below targetDirs only', () => {
  it('refuses a target outside (after {disk} expansion), and the session keeps running', async () => {
    expect((await api('POST', '/v1/sessions', { vm: 'vm1', name: 's1' })).status).toBe(201);
    for (const to of [path.join(outside, '{disk}.img'), victim, `${allowed}/../outside/{disk}.img`]) {
      const r = await api('POST', '/v1/sessions/s1/migrate', { to });
      expectRefused(r, to.includes('..') ? "contains '..'" : 'is not below a directory in targetDirs');
      expect(r.body.error.message).toMatch(/^migration target of disk d0: /);
    }
    expect(fs.readFileSync(victim, 'utf8')).toBe(PRECIOUS);
    expect(fs.existsSync(path.join(outside, 'd0.img'))).toBe(false);
    const s = (await api('GET', '/v1/sessions/s1')).body;
    expect(s.disks.map((d: any) => d.state)).toEqual(['running']);
  });

  it('still migrates to a target below targetDirs', async () => {
    const r = await api('POST', '/v1/sessions/s1/migrate', { to: path.join(allowed, 'home-{disk}.img') });
    expect(r.status).toBe(202);
    expect(await waitJob(r.body.id)).toMatchObject({ state: 'succeeded' });
    expect(fs.readFileSync(path.join(allowed, 'home-d0.img')).equals(image)).toBe(true);
  });
});
