/**
 * Fuzz target `api`: createApi (src/api/server.ts) with a real repository holding one restore
 * point (vm1, disk0 of 1 MiB), the job registry and the session manager, in a temp data dir, driven
 * through fastify's inject() (no sockets). Each input is one request to a write route (every
 * POST/PUT/DELETE of repo-routes.ts and session-routes.ts) with a JSON body shaped like the route's
 * (known keys with values of random JSON types, names that exist and names that do not) or any
 * JSON value, or a body that is not JSON, or a random content type.
 * FUSE routes are left out: a well-formed body would mount a real FUSE file system.
 * Paths in bodies are policed: sources must lie in DIR/src, targets in DIR/dst (PathPolicy).
 *
 * Oracle: every answer arrives within 5 s, its status is below 500, and a 4xx answer has the error
 * shape { error: { code: 'ERR_…', message } }.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { JobRegistry } from '../../../src/api/jobs.js';
import { createApi } from '../../../src/api/server.js';
import { TokenStore } from '../../../src/auth/token-store.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { SessionManager } from '../../../src/recovery/session-manager.js';
import { backup } from '../../../src/repo/ingest.js';
import { Repository } from '../../../src/repo/repository.js';
import { silentLogger } from '../../../src/util/log.js';
import { PathPolicy } from '../../../src/util/path-policy.js';
import { patternBuffer } from '../../helpers/images.js';
import { OracleFailure, rarely, type FuzzTarget } from '../lib.js';

interface Input {
  method: 'POST' | 'PUT' | 'DELETE';
  url: string;
  contentType: string | undefined;
  payload: string | undefined;
}

const ROUTES: Array<{ method: Input['method']; url: string }> = [
  { method: 'POST', url: '/v1/backups' },
  { method: 'POST', url: '/v1/restores' },
  { method: 'POST', url: '/v1/verify' },
  { method: 'POST', url: '/v1/prune' },
  { method: 'POST', url: '/v1/gc' },
  { method: 'POST', url: '/v1/repo/reindex' },
  { method: 'DELETE', url: '/v1/jobs/:id' },
  { method: 'POST', url: '/v1/sessions' },
  { method: 'DELETE', url: '/v1/sessions/:name' },
  { method: 'PUT', url: '/v1/sessions/:name/qos' },
  { method: 'PUT', url: '/v1/qos' },
  { method: 'POST', url: '/v1/sessions/:name/migrate' },
  { method: 'DELETE', url: '/v1/sessions/:name/migrate' },
  { method: 'POST', url: '/v1/sessions/:name/switch' },
  { method: 'POST', url: '/v1/sessions/:name/finish' },
  { method: 'POST', url: '/v1/sessions/:name/commit' },
];

const KEYS = ['vm', 'point', 'name', 'disks', 'disk', 'source', 'target', 'to', 'tags', 'label', 'configs', 'dryRun', 'graceMs', 'quota', 'qos', 'publish', 'rate', 'switch', 'iops', 'bps', 'keepLast', 'keepDaily', 'keepWithin', 'basePoint', 'dirtyBitmap', 'sparse', 'force', 'dir', 'lazy', 'nbd', 'nfs', 'fuse', '__proto__', 'constructor'];

interface Dirs {
  src: string;
  dst: string;
}

function values(d: Dirs): fc.Arbitrary<unknown> {
  const known = fc.constantFrom('vm1', 'disk0', 'latest', 'fuzz-s', `${d.src}/disk.img`, `${d.dst}/out.img`, `${d.dst}/{disk}.img`, '/etc/passwd', '../x', '', '1G', 'crash');
  const leaf = fc.oneof(known, fc.string({ maxLength: 20 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constantFrom(-1, 0, 2 ** 53, 1e308));
  return fc.oneof(
    { weight: 4, arbitrary: leaf },
    { weight: 1, arbitrary: fc.array(leaf, { maxLength: 4 }) },
    { weight: 1, arbitrary: fc.array(fc.record({ name: leaf, source: leaf, disk: leaf }, { requiredKeys: [] }), { maxLength: 3 }) },
    { weight: 1, arbitrary: fc.dictionary(fc.constantFrom(...KEYS), leaf, { maxKeys: 4 }) },
  );
}

function input(d: Dirs): fc.Arbitrary<Input> {
  const body = fc.oneof(
    { weight: 6, arbitrary: fc.dictionary(fc.constantFrom(...KEYS), values(d), { maxKeys: 6 }).map((o) => JSON.stringify(o)) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
  const params = ['fuzz-s', 'vm1', 'nope', '%00', '..', 'a%2Fb', '%E2%82'];
  const param = fc.oneof(fc.constantFrom(...params), fc.string({ minLength: 1, maxLength: 12 }).map(encodeURIComponent));
  return fc
    .record({
      route: fc.constantFrom(...ROUTES),
      param,
      query: rarely(fc.constantFrom('?disk=disk0', '?disk=', '?lazy=1', '?x[y]=1', '?disk=%ff'), 4),
      contentType: fc.oneof({ weight: 8, arbitrary: fc.constant('application/json') }, { weight: 1, arbitrary: fc.constantFrom(undefined, 'text/plain', 'application/json; charset=latin1', 'multipart/form-data', 'application/x-www-form-urlencoded') }),
      payload: body,
    })
    .map(({ route, param, query, contentType, payload }) => ({
      method: route.method,
      url: route.url.replace(/:(name|id)/, param) + (query ?? ''),
      contentType: payload === undefined ? undefined : contentType,
      payload,
    }));
}

interface Ctx {
  dir: string;
  app: FastifyInstance;
  repo: Repository;
  jobs: JobRegistry;
  sessions: SessionManager;
  catalog: Catalog;
  /** An admin token: requests reach the routes' handlers. */
  admin: string;
}

export function apiTarget(): FuzzTarget<Input, Ctx> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-fuzz-api-'));
  const dirs = { src: path.join(dir, 'src'), dst: path.join(dir, 'dst') };
  return {
    name: 'api',
    oracle: 'every write route answers random JSON within 5 s with a status below 500, and a 4xx with { error: { code, message } }',
    arbitrary: input(dirs),
    timeoutMs: 5000,
    setup: async () => {
      for (const d of [dirs.src, dirs.dst]) fs.mkdirSync(d, { recursive: true });
      const dataDir = path.join(dir, 'data');
      fs.writeFileSync(path.join(dirs.src, 'disk.img'), patternBuffer(0, 1 << 20));
      const repo = await Repository.open(dataDir, { chunkSize: 65536 });
      await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: path.join(dirs.src, 'disk.img') }] });
      const catalog = new Catalog(silentLogger);
      const jobs = new JobRegistry(silentLogger);
      const endpoints = () => ({ nbd: ['127.0.0.1:10809'], nbdSocket: [], http: '127.0.0.1:10810' });
      const sessions = await SessionManager.open({ dataDir, repo, catalog, log: silentLogger, globalQos: {}, report: { warnAgeHours: 24, warnBytes: 1 << 30, endpoints } });
      // Every route with an admin token: the fuzzer reaches the handlers, not the 401.
      const tokens = TokenStore.inMemory();
      const admin = (await tokens.create({ name: 'fuzz', role: 'admin' })).token;
      const app = createApi({
        catalog,
        log: silentLogger,
        version: 'fuzz',
        startedAt: new Date(),
        endpoints,
        config: () => ({}),
        repo,
        jobs,
        repoChanged: async () => undefined,
        sessions,
        paths: new PathPolicy({ sourceDirs: [dirs.src], targetDirs: [dirs.dst] }),
        auth: { tokens },
      });
      await app.ready();
      return { dir, app, repo, jobs, sessions, catalog, admin };
    },
    check: async (inp, ctx) => {
      const r = await ctx.app.inject({
        method: inp.method,
        url: inp.url,
        headers: { host: '127.0.0.1:10810', authorization: `Bearer ${ctx.admin}`, ...(inp.contentType ? { 'content-type': inp.contentType } : {}) },
        payload: inp.payload,
      });
      const what = `${inp.method} ${inp.url} [${inp.contentType}] ${inp.payload?.slice(0, 300)}`;
      if (r.statusCode >= 500) throw new OracleFailure(`${what} -> ${r.statusCode} ${r.body.slice(0, 300)}`);
      if (r.statusCode >= 400) {
        let body: { error?: { code?: unknown; message?: unknown } };
        try {
          body = r.json();
        } catch {
          throw new OracleFailure(`${what} -> ${r.statusCode} with a body that is not JSON: ${r.body.slice(0, 200)}`);
        }
        if (typeof body.error?.code !== 'string' || !body.error.code.startsWith('ERR_') || typeof body.error.message !== 'string') {
          throw new OracleFailure(`${what} -> ${r.statusCode} without the error shape: ${r.body.slice(0, 200)}`);
        }
      }
    },
    teardown: async (ctx) => {
      await ctx.app.close();
      await ctx.jobs.close();
      await ctx.sessions.close();
      await ctx.catalog.close();
      await ctx.repo.close();
      fs.rmSync(ctx.dir, { recursive: true, force: true });
    },
  };
}
