/** The /v1/mounts routes (through fastify's inject(), no kernel mount) and the mount/unmount CLI help. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApi } from '../../../src/api/server.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { FuseMounts } from '../../../src/fuse/manager.js';
import { silentLogger } from '../../../src/util/log.js';
import { cli } from '../../helpers/cli.js';
import { testAuth, type TestAuth } from '../../helpers/api-auth.js';

let app: FastifyInstance;
let t: TestAuth;
beforeAll(async () => {
  t = await testAuth();
  const catalog = new Catalog();
  const fuse = new FuseMounts({ catalog: catalog.view('fuse'), log: silentLogger });
  app = createApi({
    catalog,
    log: silentLogger,
    version: '0.0.0',
    startedAt: new Date(),
    endpoints: () => ({ nbd: [], nbdSocket: [], http: undefined }),
    config: () => ({}),
    fuse,
    auth: t.auth,
  });
  await app.ready();
});
afterAll(() => app.close());

describe('/v1/mounts', () => {
  it('lists no mounts at first', async () => {
    const r = await app.inject({ method: 'GET', headers: t.headers('operator'), url: '/v1/mounts' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ mounts: [] });
  });
  it('refuses a relative directory and a missing one', async () => {
    const rel = await app.inject({ method: 'POST', headers: t.headers('operator'), url: '/v1/mounts', payload: { dir: 'relative/dir' } });
    expect(rel.statusCode).toBe(400);
    expect(rel.json().error).toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: expect.stringMatching(/absolute path/) });
    const none = await app.inject({ method: 'POST', headers: t.headers('operator'), url: '/v1/mounts', payload: {} });
    expect(none.statusCode).toBe(400);
    const del = await app.inject({ method: 'DELETE', headers: t.headers('operator'), url: '/v1/mounts' });
    expect(del.statusCode).toBe(400);
  });
  it('unmounting a directory that is not mounted is 404 ERR_MOUNT_NOT_FOUND', async () => {
    const r = await app.inject({ method: 'DELETE', headers: t.headers('operator'), url: `/v1/mounts?dir=${encodeURIComponent('/tmp/not-mounted-here')}` });
    expect(r.statusCode).toBe(404);
    expect(r.json().error).toMatchObject({ code: 'ERR_MOUNT_NOT_FOUND', message: 'no file tree of this daemon is mounted at /tmp/not-mounted-here' });
  });
});

describe('rebound mount / unmount', () => {
  it('--help shows the layout and the operator steps', async () => {
    const r = await cli(['mount', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/DIR\/vms\/VM\/POINT\/DISK\.parts\/N/);
    expect(r.stdout).toMatch(/mount -o loop,ro .*noload/);
    const u = await cli(['unmount', '--help']);
    expect(u.stdout).toMatch(/--lazy/);
  });
  it('a missing directory argument to unmount is a usage error', async () => {
    expect((await cli(['unmount'])).code).toBe(2);
  });
});
