/**
 * Regression: `POST /v1/mounts {"dir":"/proc/sys/x"}` never answered (a recursive mkdir on /proc
 * spun a core), held FuseMounts' lock so every later mount waited, and kept shutdown from finishing.
 * Now system trees (and symlinks into them) are refused at once, later mounts still answer and
 * close() completes.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApi } from '../../src/api/server.js';
import { testAuth, type TestAuth } from '../helpers/api-auth.js';
import { Catalog } from '../../src/exports/catalog.js';
import { FuseMounts, resolveMountDir } from '../../src/fuse/manager.js';
import { silentLogger } from '../../src/util/log.js';
import { tempDir } from '../helpers/images.js';

/** A hang shows up as this rejection instead of a test that never ends (generous: not a speed check). */
function bounded<T>(p: Promise<T>, what: string, ms = 20_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not finish`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

let dir: string;
let fuse: FuseMounts;
let app: FastifyInstance;
let t: TestAuth;
beforeAll(async () => {
  t = await testAuth();
  dir = tempDir('rebound-mountdir-');
  const catalog = new Catalog();
  fuse = new FuseMounts({ catalog: catalog.view('fuse'), log: silentLogger });
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
afterAll(async () => {
  await bounded(app.close(), 'closing the API');
  await bounded(fuse.close(), 'closing the FUSE mounts');
  fs.rmSync(dir, { recursive: true, force: true });
});

const post = (d: string): Promise<{ statusCode: number; json: () => { error?: { code: string; message: string }; dir?: string } }> =>
  bounded(app.inject({ method: 'POST', url: '/v1/mounts', headers: t.headers('operator'), payload: { dir: d } }), `POST /v1/mounts ${d}`);

describe('mount directories in system trees', () => {
  it('/proc/sys/x is refused at once with ERR_MOUNT_DIR_NOT_ALLOWED', async () => {
    const r = await post('/proc/sys/x');
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'ERR_MOUNT_DIR_NOT_ALLOWED', message: expect.stringMatching(/\/proc/) });
    expect(fs.existsSync('/proc/sys/x')).toBe(false);
  });

  it('/, /sys, /dev/x, /run/x/y and a path through .. are refused', async () => {
    for (const d of ['/', '/sys', '/dev/rebound-x', '/run/rebound-x/y', '/tmp/../proc/x']) {
      const r = await post(d);
      expect(r.statusCode, d).toBe(400);
      expect(r.json().error?.code, d).toBe('ERR_MOUNT_DIR_NOT_ALLOWED');
    }
  });

  it('a symlink into /proc cannot smuggle a mount there', async () => {
    const link = path.join(dir, 'link');
    fs.symlinkSync('/proc/sys', link);
    const r = await post(path.join(link, 'x'));
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'ERR_MOUNT_DIR_NOT_ALLOWED', message: expect.stringMatching(/resolves to \/proc\/sys\/x/) });
    await expect(resolveMountDir(path.join(link, 'a', 'b'))).rejects.toMatchObject({ code: 'ERR_MOUNT_DIR_NOT_ALLOWED' });
    await expect(resolveMountDir(path.join(dir, 'ok', 'mnt'))).resolves.toBe(path.join(fs.realpathSync(dir), 'ok', 'mnt'));
  });

  it('a later valid mount request still answers (mounted, or a clear ERR_MOUNT_FAILED without FUSE)', async () => {
    const mnt = path.join(dir, 'a', 'b', 'mnt');
    const r = await post(mnt);
    if (r.statusCode === 201) {
      expect(r.json().dir).toBe(path.join(fs.realpathSync(dir), 'a', 'b', 'mnt'));
      const del = await bounded(app.inject({ method: 'DELETE', url: `/v1/mounts?dir=${encodeURIComponent(mnt)}`, headers: t.headers('operator') }), 'unmount');
      expect(del.statusCode).toBe(200);
    } else {
      console.log(`FUSE mount not possible here: ${JSON.stringify(r.json())}`);
      expect(r.json().error?.code).toBe('ERR_MOUNT_FAILED');
    }
  });

  it('close() completes, and a mount after close is refused', async () => {
    const f = new FuseMounts({ catalog: new Catalog().view('fuse'), log: silentLogger });
    await expect(bounded(f.mount('/proc/sys/y'), 'mount /proc/sys/y')).rejects.toMatchObject({ code: 'ERR_MOUNT_DIR_NOT_ALLOWED' });
    await bounded(f.close(), 'close');
    await expect(f.mount(path.join(dir, 'late'))).rejects.toMatchObject({ code: 'ERR_MOUNT_FAILED', message: expect.stringMatching(/stopping/) });
  });
});
