/**
 * Regression (security): any process that reached the HTTP API could read any file on the gateway.
 * POST /v1/backups with a disk source of a root-only file (or `configs: ["/etc/shadow"]`) backed it
 * up, and the copy was then readable by anyone over NBD and NFS. Paths are now policy: backup
 * sources and config files must resolve below a directory in sourceDirs (--source-dir), checked in
 * the API before anything is opened (util/path-policy.ts); refused with 403 ERR_PATH_NOT_ALLOWED.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig, validateConfig } from '../../src/config/schema.js';
import { ROLES } from '../../src/auth/permissions.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { backup } from '../../src/repo/ingest.js';
import { silentLogger } from '../../src/util/log.js';
import { daemonApi, type DaemonApi } from '../helpers/api-auth.js';
import { makeImage, tempDir } from '../helpers/images.js';

let root: string;
let allowed: string;
let outside: string;
let daemon: Daemon;

let api: DaemonApi['api'];
let waitJob: DaemonApi['waitJob'];

/** What the repository holds: the VMs and the jobs the API started. */
async function stored(): Promise<{ vms: unknown[]; jobs: unknown[] }> {
  return { vms: (await api('GET', '/v1/vms')).body.vms, jobs: (await api('GET', '/v1/jobs')).body.jobs };
}

beforeAll(async () => {
  root = fs.realpathSync(tempDir('rebound-path-backup-'));
  allowed = path.join(root, 'allowed');
  outside = path.join(root, 'outside');
  fs.mkdirSync(allowed);
  fs.mkdirSync(outside);
  makeImage(path.join(allowed, 'disk.img'), { size: 1 << 20, data: [[0, 8192]] });
  fs.writeFileSync(path.join(allowed, 'vm.xml'), '<domain/>');
  makeImage(path.join(outside, 'secret.img'), { size: 1 << 20, data: [[0, 8192]] });
  fs.chmodSync(path.join(outside, 'secret.img'), 0o600);
  fs.symlinkSync(path.join(outside, 'secret.img'), path.join(allowed, 'innocent.img'));
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
});
afterAll(async () => {
  await daemon?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('POST /v1/backups takes paths from sourceDirs only', () => {
  it('refuses a root-only file outside sourceDirs, and stores nothing', async () => {
    const before = await stored();
    const r = await api('POST', '/v1/backups', { vm: 'stolen', disks: [{ name: 'd0', source: path.join(outside, 'secret.img') }] });
    expect(r.status).toBe(403);
    expect(r.body.error.code).toBe('ERR_PATH_NOT_ALLOWED');
    expect(r.body.error.message).toContain('is not below a directory in sourceDirs (--source-dir DIR)');
    expect(await stored()).toEqual(before);
  });

  it('refuses the shadow read for every role: a viewer may not back up, an operator and an admin not outside sourceDirs', async () => {
    const before = await stored();
    for (const role of ROLES) {
      for (const body of [
        { vm: 'stolen', disks: [{ name: 'd0', source: path.join(outside, 'secret.img') }] },
        { vm: 'stolen', disks: [{ name: 'd0', source: path.join(allowed, 'disk.img') }], configs: ['/etc/shadow'] },
      ]) {
        const r = await api('POST', '/v1/backups', body, role);
        expect(r.status, role).toBe(403);
        expect(r.body.error.code, role).toBe(role === 'viewer' ? 'ERR_FORBIDDEN' : 'ERR_PATH_NOT_ALLOWED');
      }
    }
    // Without a token, nothing at all.
    const anon = await fetch(`http://${daemon.endpoints.http}/v1/backups`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ vm: 'stolen', disks: [{ name: 'd0', source: '/etc/shadow' }] }),
    });
    expect(anon.status).toBe(401);
    expect(await stored()).toEqual(before);
  });

  it('refuses a symlink inside sourceDirs that points outside', async () => {
    const before = await stored();
    const r = await api('POST', '/v1/backups', { vm: 'stolen', disks: [{ name: 'd0', source: path.join(allowed, 'innocent.img') }] });
    expect(r.status).toBe(403);
    expect(r.body.error.code).toBe('ERR_PATH_NOT_ALLOWED');
    expect(r.body.error.message).toContain(`resolves to ${path.join(outside, 'secret.img')}`);
    expect(await stored()).toEqual(before);
  });

  it("refuses configs: ['/etc/shadow'] (and '..' out of an allowed directory), and stores nothing", async () => {
    const before = await stored();
    for (const config of ['/etc/shadow', `${allowed}/../outside/secret.img`]) {
      const r = await api('POST', '/v1/backups', { vm: 'stolen', disks: [{ name: 'd0', source: path.join(allowed, 'disk.img') }], configs: [config] });
      expect(r.status).toBe(403);
      expect(r.body.error.code).toBe('ERR_PATH_NOT_ALLOWED');
      expect(r.body.error.message).toMatch(/^config file /);
    }
    expect(await stored()).toEqual(before);
  });

  it('still backs up a disk and a config file from sourceDirs', async () => {
    const r = await api('POST', '/v1/backups', { vm: 'vm1', disks: [{ name: 'd0', source: path.join(allowed, 'disk.img') }], configs: [path.join(allowed, 'vm.xml')] });
    expect(r.status).toBe(202);
    expect(await waitJob(r.body.id)).toMatchObject({ state: 'succeeded' });
    const points = (await api('GET', '/v1/vms/vm1/points')).body.points;
    expect(points).toHaveLength(1);
    expect((await api('GET', `/v1/vms/vm1/points/${points[0].id}`)).body.configs).toEqual(['vm.xml']);
    expect(JSON.stringify((await api('GET', '/v1/vms')).body.vms)).not.toContain('stolen');
  });

  it('NBD TCP URIs are not paths: the policy lets them through', async () => {
    const r = await api('POST', '/v1/backups', { vm: 'remote', disks: [{ name: 'd0', source: 'nbd://127.0.0.1:1/x' }] });
    expect(r.status).toBe(202);
    expect(await waitJob(r.body.id)).toMatchObject({ state: 'failed', error: { code: 'ERR_BACKUP_SOURCE' } });
  });

  it('the Unix socket of an nbd+unix URI is a path: outside sourceDirs it is refused, below them it is used', async () => {
    const out = await api('POST', '/v1/backups', { vm: 'remote', disks: [{ name: 'd0', source: `nbd+unix:///x?socket=${encodeURIComponent(path.join(outside, 'any.sock'))}` }] });
    expect(out.status).toBe(403);
    expect(out.body.error).toMatchObject({ code: 'ERR_PATH_NOT_ALLOWED', message: expect.stringContaining('sourceDirs') });
    const inside = await api('POST', '/v1/backups', { vm: 'remote', disks: [{ name: 'd0', source: `nbd+unix:///x?socket=${encodeURIComponent(path.join(allowed, 'none.sock'))}` }] });
    expect(inside.status).toBe(202);
    expect(await waitJob(inside.body.id)).toMatchObject({ state: 'failed', error: { code: 'ERR_BACKUP_SOURCE' } });
  });

  it('the in-process repository API stays policy-free (the daemon\'s own backups), but takes only regular files as configs', async () => {
    const m = await backup(daemon.repo, { vm: 'internal', disks: [{ name: 'd0', source: path.join(outside, 'secret.img') }] });
    expect(m.disks).toHaveLength(1);
    await expect(backup(daemon.repo, { vm: 'internal', disks: [{ name: 'd0', source: path.join(allowed, 'disk.img') }], configs: ['/dev/zero'] })).rejects.toThrow(
      /config file \/dev\/zero is not a regular file/,
    );
  });
});
