/**
 * API authentication and roles, through fastify's inject(): every registered route declares a
 * permission (walked with the onRoute hook), tokens and roles are enforced, VM patterns limit what
 * a token may name, bad tokens are rate-limited per address (a counted clock, no waiting). The
 * route table in docs/api-permissions.md is the rendering of the registered routes.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLES, ROLE_DOCS, ROLE_GRANTS } from '../../../src/auth/permissions.js';
import Fastify, { type FastifyInstance } from 'fastify';
import { createApi, type ApiContext } from '../../../src/api/server.js';
import { installAuth, registeredRoutes, renderRouteTable } from '../../../src/api/auth.js';
import { JobRegistry } from '../../../src/api/jobs.js';
import { LoginLimiter } from '../../../src/auth/login-limiter.js';
import { LogLimiter } from '../../../src/util/log-limiter.js';
import { TokenStore } from '../../../src/auth/token-store.js';
import { Metrics } from '../../../src/metrics/metrics.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { PathPolicy } from '../../../src/util/path-policy.js';
import { silentLogger, type Logger } from '../../../src/util/log.js';
import { testAuth, type TestAuth } from '../../helpers/api-auth.js';

let app: FastifyInstance;
let t: TestAuth;
let now = 1_000_000;
const warnings: Array<Record<string, unknown>> = [];
const log: Logger = { ...silentLogger, warn: (_msg: string, fields?: Record<string, unknown>) => void warnings.push(fields ?? {}), child: () => log } as Logger;

// Stand-ins: the routes are registered against them; the requests below stop before them, or
// reach only these few methods.
const repo = { vms: async () => [{ vm: 'web-1', points: 1, latest: 'p' }, { vm: 'db', points: 1, latest: 'p' }], points: async () => [] };
const sessions = {
  get: (n: string) => (n === 's-web' ? { info: { vm: 'web-1' } } : n === 's-db' ? { info: { vm: 'db' } } : undefined),
  report: () => [{ name: 's-web', vm: 'web-1' }, { name: 's-db', vm: 'db' }],
  broken: [],
  shared: { limits: {} },
};
const fuse = { list: () => [] };

function context(auth: TestAuth['auth']): ApiContext {
  const catalog = new Catalog();
  const device = new MemoryDevice(1 << 20);
  catalog.publish({ name: 'adhoc', kind: 'adhoc', disk: 'adhoc', size: device.size, capabilities: device.capabilities(), publish: ['nbd'], source: 'memory', device });
  return {
    catalog,
    log,
    version: '0',
    startedAt: new Date(),
    endpoints: () => ({ nbd: [], nbdSocket: [], http: '127.0.0.1:10810' }),
    config: () => ({ http: '127.0.0.1:10810' }),
    repo: repo as never,
    jobs: new JobRegistry(silentLogger),
    repoChanged: async () => {},
    paths: PathPolicy.none(),
    sessions: sessions as never,
    fuse: fuse as never,
    auth,
    metrics: new Metrics({ catalog, defaultMetrics: false }),
  };
}

beforeAll(async () => {
  t = await testAuth({ limiter: new LoginLimiter({ limit: 5, windowMs: 60_000, now: () => now }), logLimiter: new LogLimiter({ burst: 3, now: () => now }) });
  app = createApi(context(t.auth));
  await app.ready();
});
afterAll(() => app.close());

const req = (method: string, url: string, headers: Record<string, string> = {}, payload?: unknown) =>
  app.inject({ method: method as 'GET', url, headers: { host: '127.0.0.1:10810', ...headers }, ...(payload === undefined ? {} : { payload: payload as object }) });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe('every route declares its permission', () => {
  it('the registered routes all have one, and only GET /v1/health and the dashboard\'s static files are open', () => {
    const routes = registeredRoutes(app);
    expect(routes.length).toBeGreaterThan(30);
    expect(routes.filter((r) => !r.permission)).toEqual([]);
    expect(routes.filter((r) => r.permission === 'open').map((r) => `${r.method} ${r.url}`)).toEqual(['GET /v1/health', 'GET /', 'GET /assets/:name']);
    // Only reading is for viewers.
    expect(routes.filter((r) => r.permission === 'read').every((r) => r.method === 'GET')).toBe(true);
  });

  it('a route without one cannot be registered', async () => {
    const bare = Fastify();
    installAuth(bare, { tokens: TokenStore.inMemory() }, silentLogger);
    expect(() => bare.get('/v1/oops', async () => ({}))).toThrow(/declares no permission/);
    await bare.close();
  });

  it('docs/api-permissions.md is the table of the registered routes', async () => {
    await expect(renderRouteTable(registeredRoutes(app))).toMatchFileSnapshot('../../../docs/api-permissions.md');
  });

  it("docs/security.md's role table is the role table of the code", () => {
    const doc = fs.readFileSync(new URL('../../../docs/security.md', import.meta.url), 'utf8');
    for (const role of ROLES) {
      const perms = ROLE_GRANTS[role].filter((p) => p !== 'open').join(', ');
      expect(doc).toContain(`| \`${role}\` | ${perms} | ${ROLE_DOCS[role]} |`);
    }
  });
});

describe('tokens and roles', () => {
  it('GET /v1/health needs no token', async () => {
    expect((await req('GET', '/v1/health')).statusCode).toBe(200);
  });

  it('no token: 401 ERR_UNAUTHENTICATED with WWW-Authenticate; not counted as a failed login', async () => {
    const r = await req('GET', '/v1/exports');
    expect(r.statusCode).toBe(401);
    expect(r.json().error.code).toBe('ERR_UNAUTHENTICATED');
    expect(r.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(r.json().error.message).toMatch(/Authorization: Bearer/);
  });

  it('a malformed or unknown token: 401', async () => {
    for (const h of ['Bearer', 'Basic YWRtaW46YWRtaW4=', `Bearer ${t.token.admin}x`, `Token ${t.token.admin}`]) {
      const r = await req('GET', '/v1/exports', { authorization: h });
      expect(r.statusCode, h).toBe(401);
    }
  });

  it('viewer reads, may not write; operator operates, may not administer; admin may', async () => {
    expect((await req('GET', '/v1/vms', bearer(t.token.viewer))).statusCode).toBe(200);
    const w = await req('POST', '/v1/gc', bearer(t.token.viewer), {});
    expect(w.statusCode).toBe(403);
    expect(w.json().error).toMatchObject({ code: 'ERR_FORBIDDEN' });
    expect(w.json().error.message).toMatch(/role viewer.*admin permission/);
    expect((await req('PUT', '/v1/qos', bearer(t.token.viewer), {})).statusCode).toBe(403);
    expect((await req('POST', '/v1/backups', bearer(t.token.viewer), { vm: 'x', disks: [{ name: 'd', source: '/etc/shadow' }] })).statusCode).toBe(403);
    // operator: operate routes get past auth (the path policy then refuses /etc/shadow)
    const b = await req('POST', '/v1/backups', bearer(t.token.operator), { vm: 'x', disks: [{ name: 'd', source: '/etc/shadow' }] });
    expect(b.json().error.code).toBe('ERR_PATH_NOT_ALLOWED');
    for (const [m, u] of [['POST', '/v1/gc'], ['POST', '/v1/prune'], ['GET', '/v1/tokens'], ['GET', '/v1/config'], ['POST', '/v1/repo/reindex']] as const) {
      const r = await req(m, u, bearer(t.token.operator), m === 'POST' ? { vm: 'x' } : undefined);
      expect(r.statusCode, `${m} ${u}`).toBe(403);
    }
    expect((await req('GET', '/v1/config', bearer(t.token.admin))).statusCode).toBe(200);
    expect((await req('GET', '/v1/tokens', bearer(t.token.admin))).json().tokens).toHaveLength(3);
  });

  it('tokens made through the API work at once and stop at once when revoked', async () => {
    const made = await req('POST', '/v1/tokens', bearer(t.token.admin), { name: 'new', role: 'viewer' });
    expect(made.statusCode).toBe(201);
    const { token, id } = made.json();
    expect(token).toMatch(/^rbd_/);
    expect((await req('GET', '/v1/vms', bearer(token))).statusCode).toBe(200);
    expect((await req('GET', '/v1/tokens', bearer(t.token.admin))).json().tokens.find((x: { id: string }) => x.id === id).lastUsedAt).not.toBeNull();
    expect(JSON.stringify((await req('GET', '/v1/tokens', bearer(t.token.admin))).json())).not.toContain(token);
    expect((await req('DELETE', `/v1/tokens/${id}`, bearer(t.token.admin))).statusCode).toBe(200);
    expect((await req('GET', '/v1/vms', bearer(token))).statusCode).toBe(401);
    expect((await req('DELETE', `/v1/tokens/${id}`, bearer(t.token.admin))).json().error.code).toBe('ERR_TOKEN_NOT_FOUND');
    expect((await req('POST', '/v1/tokens', bearer(t.token.admin), { name: 'bad', role: 'root' })).statusCode).toBe(400);
  });
});

describe('VM patterns', () => {
  let web: string;
  beforeAll(async () => {
    web = (await t.tokens.create({ name: 'web operator', role: 'operator', vms: ['web-*'] })).token;
  });

  it('a limited token names only matching VMs, sessions and jobs', async () => {
    expect((await req('GET', '/v1/vms/web-1/points', bearer(web))).json().error.code).toBe('ERR_VM_NOT_FOUND'); // past auth
    const other = await req('GET', '/v1/vms/db/points', bearer(web));
    expect(other.statusCode).toBe(403);
    expect(other.json().error.message).toMatch(/limited to VMs web-\*.*db/);
    expect((await req('POST', '/v1/sessions/s-db/switch', bearer(web))).statusCode).toBe(403);
    expect((await req('DELETE', '/v1/sessions/s-db', bearer(web))).statusCode).toBe(403);
    expect((await req('POST', '/v1/sessions', bearer(web), { vm: 'db' })).statusCode).toBe(403);
    expect((await req('POST', '/v1/restores', bearer(web), { vm: 'db', disk: 'd', to: 'nbd://x/y' })).statusCode).toBe(403);
  });

  it('sees only the exports of its VMs: an ad-hoc export is not one of them', async () => {
    expect((await req('GET', '/v1/exports', bearer(web))).json().exports).toEqual([]);
    expect((await req('GET', '/v1/exports', bearer(t.token.viewer))).json().exports.map((e: { name: string }) => e.name)).toEqual(['adhoc']);
    expect((await req('GET', '/v1/exports/adhoc', bearer(web))).statusCode).toBe(403);
    expect((await req('GET', '/v1/exports/adhoc', bearer(t.token.viewer))).statusCode).toBe(200);
    expect((await req('GET', '/v1/exports/nope', bearer(web))).statusCode).toBe(404);
  });

  it('lists show it only its VMs and sessions', async () => {
    expect((await req('GET', '/v1/vms', bearer(web))).json().vms.map((v: { vm: string }) => v.vm)).toEqual(['web-1']);
    expect((await req('GET', '/v1/sessions', bearer(web))).json().sessions.map((s: { name: string }) => s.name)).toEqual(['s-web']);
    expect((await req('GET', '/v1/vms', bearer(t.token.operator))).json().vms).toHaveLength(2);
  });

  it('requests about every VM are refused to it: global QoS, a verify of everything, mounts', async () => {
    expect((await req('PUT', '/v1/qos', bearer(web), { iops: 1 })).statusCode).toBe(403);
    expect((await req('POST', '/v1/verify', bearer(web), {})).statusCode).toBe(403);
    expect((await req('POST', '/v1/mounts', bearer(web), { dir: '/mnt/x' })).statusCode).toBe(403);
    expect((await req('GET', '/v1/qos', bearer(web))).statusCode).toBe(200);
  });
});

describe('failed logins', () => {
  it('count per address: past the limit 429 with Retry-After, a valid token still passes, and the log stays bounded', async () => {
    const bad = { authorization: 'Bearer rbd_guess', 'x-forwarded-for': 'ignored' };
    const from = (ip: string) => ({ remoteAddress: ip });
    const attempt = (ip: string, headers: Record<string, string>) =>
      app.inject({ method: 'GET', url: '/v1/vms', headers: { host: '127.0.0.1:10810', ...headers }, ...from(ip) });
    now += 60_000; // a new log window (the tests above logged bad tokens)
    warnings.length = 0;
    const codes: number[] = [];
    for (let i = 0; i < 8; i++) codes.push((await attempt('192.0.2.7', bad)).statusCode);
    expect(codes).toEqual([401, 401, 401, 401, 401, 429, 429, 429]);
    const limited = await attempt('192.0.2.7', bad);
    expect(limited.headers['retry-after']).toBe('60');
    expect(limited.json().error.code).toBe('ERR_TOO_MANY_REQUESTS');
    expect((await attempt('192.0.2.7', bearer(t.token.viewer))).statusCode).toBe(200);
    expect((await attempt('192.0.2.8', bad)).statusCode).toBe(401);
    // 3 lines a window per address (5 failures from .7: 2 not written), one from .8; never the token.
    // (The first request of the new window also wrote the summaries of the tests above.)
    const refusals = (ip: string) => warnings.filter((w) => w.client === ip && w.route === 'GET /v1/vms');
    expect(refusals('192.0.2.7')).toHaveLength(3);
    expect(refusals('192.0.2.8')).toHaveLength(1);
    const before = warnings.length;
    expect(JSON.stringify(warnings)).not.toContain('rbd_guess');
    now += 30_000;
    expect((await attempt('192.0.2.7', bad)).headers['retry-after']).toBe('30');
    now += 30_000;
    expect((await attempt('192.0.2.7', bad)).statusCode).toBe(401);
    // The next window starts with one line saying how many were not written.
    expect(warnings.slice(before)).toContainEqual(expect.objectContaining({ kind: 'api-bad-token', client: '192.0.2.7', suppressed: 2 }));
  });
});
