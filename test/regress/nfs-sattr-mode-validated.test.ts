/**
 * Regression: a MKDIR or CREATE in a session folder with a sattr3 mode >= 2^31 aborted the daemon
 * (Node asserts that fs.mkdir's and fs.open's mode is an int32: one request killed the process).
 * Fixed: modes above 0o7777 are NFS3ERR_INVAL (SETATTR, CREATE, MKDIR), only permission bits are
 * ever applied (no set-uid, set-gid or sticky bit, no execute bits on regular files), sizes the
 * file APIs cannot take are NFS3ERR_FBIG, and the server keeps answering.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { tempDir } from '../helpers/images.js';
import { startInProcess, type InProcess } from '../helpers/nfs-fixture.js';
import { NFS, RpcTestClient, sattr } from '../helpers/nfs-rpc.js';

const INVAL = 22;
let dir: string;
let srv: InProcess;
let c: RpcTestClient;

beforeEach(async () => {
  dir = tempDir('rebound-nfs-mode-');
  srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'));
  c = await RpcTestClient.connect(srv.port);
});

afterEach(async () => {
  c?.close();
  await srv?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

it('refuses modes above 0o7777 with NFS3ERR_INVAL, applies only permission bits, and keeps serving', async () => {
  const root = (await c.mount('/')).fh!;
  const s1 = await c.lookupPath(root, 'sessions/s1');
  const real = (name: string): fs.Stats => fs.statSync(path.join(dir, 's1', 'nfs', name));

  expect((await c.mkdir(s1, 'd-huge', sattr({ mode: 0x80000000 }))).status).toBe(INVAL);
  expect((await c.createWith(s1, 'f-huge', sattr({ mode: 0x80000000 }), 1)).status).toBe(INVAL);
  expect((await c.createWith(s1, 'f-huge', sattr({ mode: 0xffffffff }), 0)).status).toBe(INVAL);
  expect((await c.mkdir(s1, 'd-10000', sattr({ mode: 0o10000 }))).status).toBe(INVAL);
  expect(fs.existsSync(path.join(dir, 's1', 'nfs', 'd-huge'))).toBe(false);
  expect(fs.existsSync(path.join(dir, 's1', 'nfs', 'f-huge'))).toBe(false);

  // Set-id and sticky bits (and a file's execute bits) are dropped, never applied on disk.
  const f = await c.createWith(s1, 'vm1.nvram', sattr({ mode: 0o7777 }), 1);
  expect(f.status).toBe(0);
  expect(real('vm1.nvram').mode & 0o7111).toBe(0);
  const d = await c.mkdir(s1, 'snap', sattr({ mode: 0o7777 }));
  expect(d.status).toBe(0);
  expect(real('snap').isDirectory()).toBe(true);
  expect(real('snap').mode & 0o7000).toBe(0);

  const fh = Buffer.from(f.resok!.obj.handle!.data);
  expect((await c.setattr(fh, sattr({ mode: 0x80000000 }))).status).toBe(INVAL);
  expect((await c.setattr(fh, sattr({ mode: 0o20000 }))).status).toBe(INVAL);
  expect((await c.setattr(fh, sattr({ mode: 0o6777 }))).status).toBe(0);
  expect(real('vm1.nvram').mode & 0o7111).toBe(0);
  expect((await c.setattr(fh, sattr({ size: 1n << 63n }))).status).toBe(27); // NFS3ERR_FBIG

  // Still serving, on this connection and on a new one.
  expect(await c.call(NFS, 3, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
  expect((await c.getattr(s1)).status).toBe(0);
  const c2 = await RpcTestClient.connect(srv.port);
  expect((await c2.getattr(s1)).status).toBe(0);
  c2.close();
});
