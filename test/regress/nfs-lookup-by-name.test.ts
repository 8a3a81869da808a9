/**
 * Regression: NFS LOOKUP in a session folder listed the whole folder and lstat'ed every entry to
 * find one name (5 ms in an empty folder, 70 ms after 1,353 files: ESXi looks names up all the
 * time). Fixed: LOOKUP goes by name: the folder's flat disks from memory, else one lstat of that
 * name. Counted here, not timed: the number of file-system calls of one LOOKUP in a folder with
 * 5,000 files.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { tempDir } from '../helpers/images.js';
import { SESSION_DISK_BYTES, startInProcess, type InProcess } from '../helpers/nfs-fixture.js';
import { RpcTestClient } from '../helpers/nfs-rpc.js';

const FILES = 5000;
let dir: string;
let srv: InProcess;
let c: RpcTestClient;

beforeEach(async () => {
  dir = tempDir('rebound-nfs-lookup-');
  srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'));
  c = await RpcTestClient.connect(srv.port);
});

afterEach(async () => {
  vi.restoreAllMocks();
  c?.close();
  await srv?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

it('LOOKUP in a folder of 5,000 files makes O(1) file-system calls and answers flat disks, real files and missing names', async () => {
  const root = (await c.mount('/')).fh!;
  const s1 = await c.lookupPath(root, 'sessions/s1');
  expect((await c.lookup(s1, 'disk0.vmdk')).status).toBe(0); // the folder is prepared
  const real = path.join(dir, 's1', 'nfs');
  for (let i = 0; i < FILES; i++) fs.writeFileSync(path.join(real, `f-${String(i).padStart(5, '0')}.log`), 'x');

  const readdir = vi.spyOn(fs.promises, 'readdir');
  const lstat = vi.spyOn(fs.promises, 'lstat');
  const stat = vi.spyOn(fs.promises, 'stat');
  const calls = (): number => readdir.mock.calls.length + lstat.mock.calls.length + stat.mock.calls.length;

  const flat = await c.lookup(s1, 'disk0-flat.vmdk');
  expect(flat.status).toBe(0);
  expect(flat.resok!.objAttributes.attributes!.size).toBe(BigInt(SESSION_DISK_BYTES));
  expect(readdir).not.toHaveBeenCalled();
  expect(calls()).toBeLessThanOrEqual(4);

  const before = calls();
  const file = await c.lookup(s1, 'f-01234.log');
  expect(file.status).toBe(0);
  expect(file.resok!.objAttributes.attributes!.size).toBe(1n);
  expect(readdir).not.toHaveBeenCalled();
  expect(calls() - before).toBeLessThanOrEqual(4);

  const before2 = calls();
  expect((await c.lookup(s1, 'no-such-file')).status).toBe(2); // NFS3ERR_NOENT
  expect((await c.lookup(s1, '../s1')).status).not.toBe(0); // never a path
  expect(readdir).not.toHaveBeenCalled();
  expect(calls() - before2).toBeLessThanOrEqual(8);
});
