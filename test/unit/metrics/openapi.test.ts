/**
 * GET /v1/openapi.json: the document validates as OpenAPI 3 (@seriousme/openapi-schema-validator),
 * lists exactly the routes the server registers (api/auth.ts registeredRoutes) with their
 * permission, and every operation documents the error body with the registry's codes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Validator } from '@seriousme/openapi-schema-validator';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { createApi } from '../../../src/api/server.js';
import { registeredRoutes } from '../../../src/api/auth.js';
import { JobRegistry } from '../../../src/api/jobs.js';
import { Metrics } from '../../../src/metrics/metrics.js';
import { ERROR_CODES } from '../../../src/errors.js';
import { PathPolicy } from '../../../src/util/path-policy.js';
import { silentLogger } from '../../../src/util/log.js';
import { testAuth } from '../../helpers/api-auth.js';

let app: FastifyInstance;
let metrics: Metrics;
let viewer: Record<string, string>;

beforeAll(async () => {
  const t = await testAuth();
  viewer = t.headers('viewer');
  const catalog = new Catalog();
  const device = new MemoryDevice(1 << 20);
  catalog.publish({ name: 'adhoc', kind: 'adhoc', disk: 'adhoc', size: device.size, capabilities: device.capabilities(), publish: ['nbd'], device });
  metrics = new Metrics({ catalog, defaultMetrics: false });
  // Stand-ins: with them every route group registers (no request here reaches them).
  app = createApi({
    catalog,
    log: silentLogger,
    version: '0.1.0',
    startedAt: new Date(),
    endpoints: () => ({ nbd: [], nbdSocket: [], http: '127.0.0.1:10810' }),
    config: () => ({ http: '127.0.0.1:10810' }),
    repo: { vms: async () => [], points: async () => [] } as never,
    jobs: new JobRegistry(silentLogger),
    repoChanged: async () => {},
    paths: PathPolicy.none(),
    sessions: { get: () => undefined, report: () => [], broken: [], shared: { limits: {} } } as never,
    fuse: { list: () => [] } as never,
    auth: t.auth,
    metrics,
  });
  await app.ready();
});
afterAll(async () => {
  await app.close();
  metrics.close();
});

async function document(): Promise<Record<string, any>> {
  const anon = await app.inject({ method: 'GET', url: '/v1/openapi.json', headers: { host: '127.0.0.1:10810' } });
  expect(anon.statusCode).toBe(401); // permission read: a token, a viewer's is enough
  const r = await app.inject({ method: 'GET', url: '/v1/openapi.json', headers: { host: '127.0.0.1:10810', ...viewer } });
  expect(r.statusCode).toBe(200);
  return r.json();
}

describe('OpenAPI document', () => {
  it('validates as OpenAPI 3', async () => {
    const doc = await document();
    expect(doc.openapi).toMatch(/^3\.0\./);
    const result = await new Validator().validate(doc);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    // The validator does refuse a broken document (this test can fail).
    const broken = structuredClone(doc);
    delete broken.info;
    expect((await new Validator().validate(broken)).valid).toBe(false);
  });

  it('lists exactly the registered routes, with their permission', async () => {
    const doc = await document();
    const documented = new Set<string>();
    for (const [p, ops] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      for (const [method, op] of Object.entries(ops)) {
        if (method === 'head') continue;
        documented.add(`${method.toUpperCase()} ${p}`);
        expect(op['x-permission'], `${method} ${p}`).toMatch(/^(open|read|operate|admin)$/);
        expect(Boolean(op.security), `${method} ${p} security`).toBe(op['x-permission'] !== 'open');
      }
    }
    const registered = new Set(registeredRoutes(app).filter((r) => r.method !== 'HEAD').map((r) => `${r.method} ${r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`));
    expect(registered.size).toBeGreaterThan(30);
    expect([...documented].sort()).toEqual([...registered].sort());
    expect(registered.has('GET /metrics')).toBe(true);
    expect(registered.has('GET /v1/openapi.json')).toBe(true);
  });

  it('every operation documents the error body; its codes are the registry of src/errors.ts', async () => {
    const doc = await document();
    const codes: string[] = doc.components.schemas.ApiError.properties.error.properties.code.enum;
    for (const c of Object.keys(ERROR_CODES)) expect(codes).toContain(c);
    for (const ops of Object.values(doc.paths as Record<string, Record<string, any>>)) {
      for (const op of Object.values(ops)) {
        expect(op.responses['4XX'].content['application/json'].schema.$ref).toBe('#/components/schemas/ApiError');
        expect(op.responses['5XX']).toBeDefined();
        const ok = Object.entries(op.responses as Record<string, { content?: Record<string, unknown> }>).filter(([code]) => /^2/.test(code));
        expect(ok.length).toBeGreaterThan(0);
        for (const [, r] of ok) expect(Object.keys(r.content ?? {}).length).toBeGreaterThan(0);
      }
    }
    // Path parameters are documented where the URL has them.
    const one = doc.paths['/v1/exports/{name}'].get;
    expect(one.parameters.some((p: { in: string; name: string }) => p.in === 'path' && p.name === 'name')).toBe(true);
    // Query parameters and bodies come from the routes' schemas.
    expect(doc.paths['/v1/health'].get.parameters.some((p: { in: string; name: string }) => p.in === 'query' && p.name === 'reset')).toBe(true);
    expect(doc.paths['/v1/sessions'].post.requestBody.content['application/json'].schema.required).toEqual(['vm']);
  });
});
