/**
 * The CLI's side of API tokens: where it takes the token from (and where it does not send the
 * data directory's admin token), `rebound token create|list|revoke` against an in-process daemon,
 * and the error a 401 gives.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveToken } from '../../../src/cli/api.js';
import { adminTokenPath } from '../../../src/auth/token-store.js';
import { defaultConfig, validateConfig } from '../../../src/config/schema.js';
import { Daemon } from '../../../src/daemon/daemon.js';
import { silentLogger } from '../../../src/util/log.js';
import { cli } from '../../helpers/cli.js';
import { tempDir } from '../../helpers/images.js';

let dir: string;
let daemon: Daemon;
let server: string;
let data: string;

beforeAll(async () => {
  dir = tempDir('rebound-cli-token-');
  data = path.join(dir, 'data');
  daemon = await Daemon.start(validateConfig({ ...defaultConfig({}), dataDir: data, nbd: [], http: '127.0.0.1:0' }), silentLogger);
  server = `http://${daemon.endpoints.http}`;
});
afterAll(async () => {
  await daemon.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('resolveToken', () => {
  it('takes --token-file, then REBOUND_TOKEN, then REBOUND_TOKEN_FILE, then the data directory\'s admin token', () => {
    fs.writeFileSync(path.join(dir, 'a.token'), 'rbd_from_file\n');
    fs.writeFileSync(path.join(dir, 'b.token'), 'rbd_from_env_file\n');
    const admin = fs.readFileSync(adminTokenPath(data), 'utf8').trim();
    const io = (env: NodeJS.ProcessEnv) => ({ env, cwd: dir });
    const all = { REBOUND_TOKEN: 'rbd_env', REBOUND_TOKEN_FILE: 'b.token', REBOUND_DATA: data };
    expect(resolveToken({ tokenFile: 'a.token' }, io(all), server).token).toBe('rbd_from_file');
    expect(resolveToken({}, io(all), server).token).toBe('rbd_env');
    expect(resolveToken({}, io({ ...all, REBOUND_TOKEN: undefined }), server).token).toBe('rbd_from_env_file');
    expect(resolveToken({}, io({ REBOUND_DATA: data }), server).token).toBe(admin);
    expect(resolveToken({ data }, io({}), server).token).toBe(admin);
    // ./rebound-data of the working directory by default
    expect(resolveToken({}, { env: {}, cwd: dir }, server).token).toBeUndefined(); // DIR/rebound-data does not exist
  });

  it('sends the admin token of the data directory only to loopback or the address in its lock', () => {
    const r = resolveToken({ data }, { env: {}, cwd: dir }, 'http://192.0.2.1:10810');
    expect(r.token).toBeUndefined();
    expect(r.tried.join(' ')).toMatch(/not sent to http:\/\/192\.0\.2\.1:10810/);
    expect(resolveToken({ data }, { env: {}, cwd: dir }, 'http://localhost:1').token).toBeDefined();
    expect(resolveToken({ data }, { env: {}, cwd: dir }, `http://${daemon.endpoints.http}`).token).toBeDefined();
  });

  it('a --token-file that cannot be read is an error, not an anonymous request', () => {
    expect(() => resolveToken({ tokenFile: 'missing.token' }, { env: {}, cwd: dir }, server)).toThrow(/cannot read --token-file/);
  });
});

describe('rebound token', () => {
  it('create prints the token once; list shows it without the token; revoke ends it', async () => {
    const c = await cli(['--server', server, '--data', data, 'token', 'create', '--name', 'ci', '--role', 'viewer', '--vm', 'web-*']);
    expect(c.code, c.stderr).toBe(0);
    const token = c.stdout.trim();
    expect(token).toMatch(/^rbd_[A-Za-z0-9_-]{43}$/);
    expect(c.stderr).toMatch(/not shown again/);
    const l = await cli(['--server', server, '--data', data, 'token', 'list']);
    expect(l.stdout).toMatch(/ci\s+viewer\s+web-\*/);
    expect(l.stdout).not.toContain(token);
    const id = JSON.parse((await cli(['--server', server, '--data', data, 'token', 'list', '--json'])).stdout).tokens.find((t: { name: string }) => t.name === 'ci').id;
    // The new token works, within its role.
    expect((await cli(['--server', server, 'list'], { env: { REBOUND_TOKEN: token } })).code).toBe(0);
    const denied = await cli(['--server', server, 'token', 'list'], { env: { REBOUND_TOKEN: token } });
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/role viewer.*admin permission/);
    const r = await cli(['--server', server, '--data', data, 'token', 'revoke', id, '--json']);
    expect(JSON.parse(r.stdout).revoked).toMatchObject({ id, name: 'ci', role: 'viewer' });
    const after = await cli(['--server', server, 'list'], { env: { REBOUND_TOKEN: token } });
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(/not valid/);
  });

  it('without a token, a client command says how to pass one', async () => {
    const r = await cli(['--server', server, 'list'], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/needs an API token/);
    expect(r.stderr).toMatch(/--token-file FILE, REBOUND_TOKEN=TOKEN or REBOUND_TOKEN_FILE=FILE/);
    expect(r.stderr).toMatch(/rebound-data\/auth\/admin\.token does not exist/);
  });

  it('create refuses an unknown role before asking the daemon', async () => {
    const r = await cli(['--server', server, '--data', data, 'token', 'create', '--name', 'x', '--role', 'root']);
    expect(r.code).toBe(2);
  });
});
