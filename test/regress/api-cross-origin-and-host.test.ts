/**
 * Regression (CSRF / DNS rebinding): the API ran `text/plain` POSTs from any web page (routes
 * without a body schema such as /v1/repo/reindex) and answered any Host name. Now a write request
 * with a non-JSON Content-Type is 415, one from another Origin is 403, an unknown Host is 421, and
 * bodies are limited; the CLI's client (JSON bodies, body-less POSTs) keeps working.
 */
import os from 'node:os';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/api/client.js';
import { JobRegistry } from '../../src/api/jobs.js';
import { createApi, type ApiContext } from '../../src/api/server.js';
import { Catalog } from '../../src/exports/catalog.js';
import type { Repository } from '../../src/repo/repository.js';
import { silentLogger } from '../../src/util/log.js';
import { testAuth, type TestAuth } from '../helpers/api-auth.js';

let reindexed = 0;
let http: string | undefined;
let app: FastifyInstance;
let catalog: Catalog;

function context(listen: () => string | undefined): ApiContext {
  // Only what /v1/repo/reindex uses: a route without a body schema, the kind a text/plain POST reached.
  const repo = { reindex: async () => ++reindexed } as unknown as Repository;
  return {
    catalog,
    log: silentLogger,
    version: '0.0.0',
    startedAt: new Date(),
    endpoints: () => ({ nbd: [], nbdSocket: [], http: listen() }),
    config: () => ({ http: '127.0.0.1:0' }),
    repo,
    jobs: new JobRegistry(silentLogger),
    repoChanged: async () => undefined,
    auth: t.auth,
  };
}

let t: TestAuth;
beforeAll(async () => {
  t = await testAuth();
  catalog = new Catalog();
  app = createApi(context(() => http));
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  http = addr && typeof addr === 'object' ? `127.0.0.1:${addr.port}` : undefined;
});
afterAll(async () => {
  await app.close();
  await catalog.close();
});

const reindex = (headers: Record<string, string>, payload?: string) => app.inject({ method: 'POST', url: '/v1/repo/reindex', headers: { host: http!, ...t.headers('admin'), ...headers }, payload });

describe('API request hygiene', () => {
  it('a cross-origin text/plain POST (what a web page can send) is refused and runs nothing', async () => {
    const before = reindexed;
    const r = await reindex({ 'content-type': 'text/plain', origin: 'http://evil.example' }, '{}');
    expect(r.statusCode).toBe(415);
    expect(r.json().error).toMatchObject({ code: 'ERR_UNSUPPORTED_MEDIA_TYPE' });
    for (const type of ['text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const f = await reindex({ 'content-type': type }, 'a=b');
      expect(f.statusCode, type).toBe(415);
    }
    expect(reindexed).toBe(before);
  });

  it('a JSON POST from another origin is 403; from the API\'s own origin it runs', async () => {
    const before = reindexed;
    const r = await reindex({ 'content-type': 'application/json', origin: 'http://evil.example' }, '{}');
    expect(r.statusCode).toBe(403);
    expect(r.json().error.code).toBe('ERR_ORIGIN_NOT_ALLOWED');
    expect((await reindex({ origin: 'null' })).statusCode).toBe(403);
    expect(reindexed).toBe(before);
    const own = await reindex({ 'content-type': 'application/json; charset=utf-8', origin: `http://${http}` }, '{}');
    expect(own.statusCode).toBe(200);
    expect(reindexed).toBe(before + 1);
  });

  it('a Host the daemon does not answer to is 421 (DNS rebinding), for reads and writes', async () => {
    const before = reindexed;
    const get = await app.inject({ method: 'GET', url: '/v1/health', headers: { host: 'evil.example' } });
    expect(get.statusCode).toBe(421);
    expect(get.json().error).toMatchObject({ code: 'ERR_HOST_NOT_ALLOWED', message: expect.stringMatching(/evil\.example/) });
    expect((await reindex({ host: 'evil.example:' + http!.split(':')[1] })).statusCode).toBe(421);
    expect(reindexed).toBe(before);
    for (const host of [http!, 'localhost', 'LOCALHOST:1', '127.0.0.1', '[::1]:8080']) {
      expect((await app.inject({ method: 'GET', url: '/v1/health', headers: { host } })).statusCode, host).toBe(200);
    }
  });

  it('a wildcard listener also answers to this machine\'s hostname and addresses', async () => {
    const wild = createApi(context(() => '0.0.0.0:10810'));
    try {
      expect((await wild.inject({ method: 'GET', url: '/v1/health', headers: { host: `${os.hostname()}:10810` } })).statusCode).toBe(200);
      expect((await wild.inject({ method: 'GET', url: '/v1/health', headers: { host: 'rebind.evil.example:10810' } })).statusCode).toBe(421);
    } finally {
      await wild.close();
    }
  });

  it('answers to the names of the httpHostNames setting (a gateway reached through port mapping)', async () => {
    const mapped = createApi({ ...context(() => '127.0.0.1:10810'), config: () => ({ http: '127.0.0.1:10810', httpHostNames: ['Gateway.Example'] }) });
    try {
      expect((await mapped.inject({ method: 'GET', url: '/v1/health', headers: { host: 'gateway.example:8080' } })).statusCode).toBe(200);
      expect((await mapped.inject({ method: 'GET', url: '/v1/health', headers: { host: 'other.example:8080' } })).statusCode).toBe(421);
    } finally {
      await mapped.close();
    }
  });

  it('bodies are limited to 1 MiB', async () => {
    const r = await reindex({ 'content-type': 'application/json' }, JSON.stringify({ pad: 'x'.repeat(1024 * 1024) }));
    expect(r.statusCode).toBe(413);
    expect(r.json().error.code).toBeDefined();
  });

  it("the CLI's client still works over HTTP: body-less and JSON POSTs, GETs", async () => {
    const client = new ApiClient(`http://${http}`, { token: t.token.admin });
    const before = reindexed;
    await expect(client.post('/v1/repo/reindex')).resolves.toEqual({ points: before + 1 });
    await expect(client.post('/v1/repo/reindex', {})).resolves.toEqual({ points: before + 2 });
    await expect(client.get('/v1/health')).resolves.toMatchObject({ status: 'ok' });
  });
});
