/** HTTP API routes, through fastify's inject() (no sockets). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { createApi } from '../../../src/api/server.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { silentLogger } from '../../../src/util/log.js';
import { testAuth, type TestAuth } from '../../helpers/api-auth.js';

let app: FastifyInstance;
let catalog: Catalog;
let t: TestAuth;
beforeAll(async () => {
  t = await testAuth();
  catalog = new Catalog();
  const device = new MemoryDevice(1 << 20);
  catalog.publish({ name: 'disk', kind: 'adhoc', disk: 'disk', size: device.size, capabilities: device.capabilities(), publish: ['nbd'], description: 'memory disk', source: 'memory', device });
  app = createApi({
    catalog,
    log: silentLogger,
    version: '9.9.9',
    startedAt: new Date(Date.now() - 5000),
    endpoints: () => ({ nbd: ['127.0.0.1:10809'], nbdSocket: ['/run/r.sock'], http: '127.0.0.1:10810' }),
    config: () => ({ dataDir: '/data' }),
    auth: t.auth,
  });
  await app.ready();
});
afterAll(async () => {
  await app.close();
  await catalog.close();
});

describe('HTTP API', () => {
  it('GET /v1/health', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/health' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ status: 'ok', version: '9.9.9', exports: 1, endpoints: { http: '127.0.0.1:10810' } });
    expect(r.json().uptimeSeconds).toBeGreaterThanOrEqual(5);
  });
  it('GET /v1/exports lists exports with NBD URIs', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/exports', headers: t.headers() });
    const body = r.json();
    expect(body.defaultExport).toBe('disk');
    expect(body.exports[0]).toMatchObject({
      name: 'disk',
      size: 1 << 20,
      readOnly: false,
      uris: ['nbd://127.0.0.1:10809/disk', 'nbd+unix:///disk?socket=%2Frun%2Fr.sock'],
    });
    expect(body.exports[0].capabilities.canWrite).toBe(true);
  });
  it('GET /v1/exports/:name and its 404', async () => {
    expect((await app.inject({ method: 'GET', url: '/v1/exports/disk', headers: t.headers() })).json().name).toBe('disk');
    const r = await app.inject({ method: 'GET', url: '/v1/exports/nope', headers: t.headers() });
    expect(r.statusCode).toBe(404);
    expect(r.json()).toEqual({ error: { code: 'ERR_EXPORT_NOT_FOUND', message: "no export named 'nope'" } });
  });
  it('unknown routes answer 404 in the error shape', async () => {
    const r = await app.inject({ method: 'GET', url: '/v2/whatever', headers: t.headers() });
    expect(r.statusCode).toBe(404);
    expect(r.json().error.code).toBe('ERR_NOT_FOUND');
  });
  it('GET /v1/config', async () => {
    expect((await app.inject({ method: 'GET', url: '/v1/config', headers: t.headers() })).json()).toEqual({ dataDir: '/data' });
  });
});
