/**
 * Regression (security, issue 12): the HTTP API served anyone who reached it, in clear text. Now
 * the daemon process, with --http-tls and a certificate directory (real openssl), answers real
 * `curl` over HTTPS: GET /v1/health is open; anything else without a token is 401; a viewer token
 * on a write route is 403; an operator token backs up within the allowed paths but may not gc
 * (admin only); a revoked token is 401; bad tokens from one address turn into 429 with
 * Retry-After (counted, no waiting) while a valid token still passes; the shadow read is refused
 * for every role. The CLI works over https:// with --ca-cert and explains a missing token or CA.
 * The token files are 0600 in a 0700 directory.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run } from '../helpers/run.js';
import { makeTlsFixture, type TlsFixture } from '../helpers/tls-certs.js';

const missing = missingPeers('curl', 'openssl');
let dir: string;
let tls: TlsFixture;
let daemon: DaemonProcess | undefined;
let ca: string;
const tokens: Record<string, string> = {};

/** curl over HTTPS trusting the test CA; returns status, headers and body. */
async function curl(method: string, url: string, opts: { token?: string; body?: unknown; scheme?: string; from?: string } = {}): Promise<{ status: number; headers: string; body: any }> {
  const headerFile = path.join(dir, `headers-${Math.random().toString(36).slice(2)}`);
  const args = ['-s', '-X', method, '--cacert', ca, '-D', headerFile, '-o', '-', '-w', '\n%{http_code}', '--max-time', '30'];
  if (opts.token) args.push('-H', `Authorization: Bearer ${opts.token}`);
  if (opts.from) args.push('--interface', opts.from);
  if (opts.body !== undefined) args.push('-H', 'Content-Type: application/json', '--data', JSON.stringify(opts.body));
  args.push(`${opts.scheme ?? 'https'}://${daemon!.http}${url}`);
  const r = await run('curl', args);
  const lines = r.stdout.split('\n');
  const status = Number(lines.pop());
  const text = lines.join('\n');
  const headers = fs.existsSync(headerFile) ? fs.readFileSync(headerFile, 'utf8') : '';
  fs.rmSync(headerFile, { force: true });
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: kept as text
  }
  return { status, headers, body };
}

/** The CLI as a child process against the daemon, over https:// with the test CA. */
const rebound = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  run(process.execPath, [CLI, '--server', `https://${daemon!.http}`, ...args], { cwd: dir, env: { PATH: process.env.PATH, ...env } });

beforeAll(async () => {
  if (missing.length) return;
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-api-https-')));
  tls = await makeTlsFixture(path.join(dir, 'tls'), []);
  ca = path.join(tls.serverDir, 'ca-cert.pem');
  makeImage(path.join(dir, 'disk.img'), { size: 1 << 20, data: [[0, 8192]] });
  daemon = await startDaemonProcess(['--data', path.join(dir, 'data'), '--nbd', 'none', '--http', '127.0.0.1:0', '--http-tls', '--tls-certificates', tls.serverDir], {
    cwd: dir,
  });
  tokens.admin = daemon.token!;
  for (const role of ['viewer', 'operator'] as const) {
    const r = await rebound(['--ca-cert', ca, '--token-file', daemon.tokenFile, 'token', 'create', '--name', `${role} 1`, '--role', role, '--json']);
    expect(r.code, r.stderr).toBe(0);
    tokens[role] = JSON.parse(r.stdout).token;
    tokens[`${role}Id`] = JSON.parse(r.stdout).id;
  }
}, 120_000);

afterAll(async () => {
  await daemon?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(missing.length > 0)('the API over HTTPS with tokens (curl, the daemon process)', () => {
  it('serves HTTPS only, with the certificate of the directory; GET /v1/health needs no token', async () => {
    expect(daemon!.url).toMatch(/^https:\/\//);
    const h = await curl('GET', '/v1/health');
    expect(h.status).toBe(200);
    expect(h.body.status).toBe('ok');
    const plain = await curl('GET', '/v1/health', { scheme: 'http' });
    expect(plain.status).not.toBe(200);
    // A client that does not trust the CA does not get through.
    const untrusted = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `https://${daemon!.http}/v1/health`]);
    expect(untrusted.code).not.toBe(0);
  });

  it('no token: 401 ERR_UNAUTHENTICATED', async () => {
    const r = await curl('GET', '/v1/vms');
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('ERR_UNAUTHENTICATED');
    expect(r.headers).toMatch(/www-authenticate: Bearer/i);
  });

  it('a viewer reads but gets 403 on a write route', async () => {
    expect((await curl('GET', '/v1/vms', { token: tokens.viewer })).status).toBe(200);
    const w = await curl('POST', '/v1/backups', { token: tokens.viewer, body: { vm: 'v', disks: [{ name: 'd0', source: path.join(dir, 'disk.img') }] } });
    expect(w.status).toBe(403);
    expect(w.body.error.code).toBe('ERR_FORBIDDEN');
  });

  it('an operator backs up within the allowed paths, and gets 403 on an admin route', async () => {
    const b = await curl('POST', '/v1/backups', { token: tokens.operator, body: { vm: 'vm1', disks: [{ name: 'd0', source: path.join(dir, 'disk.img') }] } });
    expect(b.status, JSON.stringify(b.body)).toBe(202);
    let job = b.body;
    for (let i = 0; i < 600 && job.state === 'running'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      job = (await curl('GET', `/v1/jobs/${b.body.id}`, { token: tokens.operator })).body;
    }
    expect(job.state).toBe('succeeded');
    const gc = await curl('POST', '/v1/gc', { token: tokens.operator, body: {} });
    expect(gc.status).toBe(403);
    expect(gc.body.error.message).toMatch(/admin permission/);
    expect((await curl('GET', '/v1/tokens', { token: tokens.operator })).status).toBe(403);
    expect((await curl('POST', '/v1/gc', { token: tokens.admin, body: {} })).status).toBe(202);
  });

  it('the shadow read is refused for every role', async () => {
    for (const role of ['viewer', 'operator', 'admin']) {
      for (const body of [
        { vm: 'stolen', disks: [{ name: 'd0', source: '/etc/shadow' }] },
        { vm: 'stolen', disks: [{ name: 'd0', source: path.join(dir, 'disk.img') }], configs: ['/etc/shadow'] },
      ]) {
        const r = await curl('POST', '/v1/backups', { token: tokens[role], body });
        expect(r.status, role).toBe(403);
        expect(r.body.error.code, role).toBe(role === 'viewer' ? 'ERR_FORBIDDEN' : 'ERR_PATH_NOT_ALLOWED');
      }
    }
    expect(JSON.stringify((await curl('GET', '/v1/vms', { token: tokens.admin })).body)).not.toContain('stolen');
  });

  it('a revoked token is 401 at once', async () => {
    const r = await rebound(['--ca-cert', ca, '--token-file', daemon!.tokenFile, 'token', 'revoke', tokens.viewerId!]);
    expect(r.code, r.stderr).toBe(0);
    expect((await curl('GET', '/v1/vms', { token: tokens.viewer })).status).toBe(401);
    const list = await rebound(['--ca-cert', ca, 'token', 'list', '--json'], { REBOUND_TOKEN: tokens.admin });
    expect(JSON.parse(list.stdout).tokens.map((t: { name: string }) => t.name)).not.toContain('viewer 1');
  });

  it('bad tokens from one address: 401 ten times, then 429 with Retry-After; a valid token still passes', async () => {
    // From 127.0.0.2 (loopback too), an address no other test used.
    const from = '127.0.0.2';
    const codes: number[] = [];
    for (let i = 0; i < 10; i++) codes.push((await curl('GET', '/v1/vms', { token: `rbd_guess${i}`, from })).status);
    expect(codes).toEqual(Array(10).fill(401));
    const limited = await curl('GET', '/v1/vms', { token: 'rbd_guess10', from });
    expect(limited.status).toBe(429);
    expect(limited.body.error.code).toBe('ERR_TOO_MANY_REQUESTS');
    expect(Number(/retry-after: (\d+)/i.exec(limited.headers)?.[1])).toBeGreaterThan(0);
    expect((await curl('GET', '/v1/vms', { token: tokens.operator, from })).status).toBe(200);
    expect((await curl('GET', '/v1/vms', { token: 'rbd_guess11' })).status).toBe(401); // 127.0.0.1: its own count
    // Logged, without the tokens.
    expect(daemon!.stderr()).toMatch(/bad token refused/);
    expect(daemon!.stderr()).not.toContain('rbd_guess');
  });

  it('the CLI says how to pass a token, and how to trust the CA', async () => {
    const noToken = await rebound(['--ca-cert', ca, 'list']);
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/needs an API token/);
    expect(noToken.stderr).toMatch(/--token-file FILE/);
    const noCa = await rebound(['--token-file', daemon!.tokenFile, 'status']);
    expect(noCa.code).toBe(1);
    expect(noCa.stderr).toMatch(/--ca-cert/);
    const ok = await rebound(['status'], { REBOUND_CA_CERT: ca, REBOUND_TOKEN_FILE: daemon!.tokenFile });
    expect(ok.code, ok.stderr).toBe(0);
    // Run on the gateway with the data directory: it finds the admin token itself.
    const own = await rebound(['--ca-cert', ca, '--data', path.join(dir, 'data'), 'token', 'list']);
    expect(own.code, own.stderr).toBe(0);
    expect(own.stdout).toMatch(/admin \(first start\)/);
  });

  it('keeps the token files readable by their owner only', () => {
    const mode = (p: string) => fs.statSync(p).mode & 0o777;
    expect(mode(path.join(dir, 'data', 'auth'))).toBe(0o700);
    expect(mode(path.join(dir, 'data', 'auth', 'admin.token'))).toBe(0o600);
    expect(mode(path.join(dir, 'data', 'auth', 'tokens.json'))).toBe(0o600);
    expect(fs.readFileSync(path.join(dir, 'data', 'auth', 'tokens.json'), 'utf8')).not.toContain(tokens.operator);
    expect(daemon!.stderr()).not.toContain(tokens.admin);
    expect(daemon!.stdout()).not.toContain(tokens.admin);
  });
});

