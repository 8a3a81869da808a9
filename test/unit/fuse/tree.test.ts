/** FuseTree (the namespace over the catalog's FUSE view, without a kernel mount), readAt and the FUSE errno mapper. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { CowOverlay } from '../../../src/blockdev/layers/cow/cow-overlay.js';
import { BlockError, ReboundError } from '../../../src/errors.js';
import { pointEntryName } from '../../../src/exports/catalog.js';
import { readAt } from '../../../src/exports/read-at.js';
import { Errno, toFuseErrno } from '../../../src/fuse/errno.js';
import { FuseTree, type FileNode, type Node } from '../../../src/fuse/tree.js';
import { silentLogger } from '../../../src/util/log.js';
import { buildGpt, buildMbr, writeMbrEntry } from '../../helpers/fuse-disks.js';
import { BufferDevice, MemoryCatalog } from '../../helpers/memory-catalog.js';
import { patternBuffer, tempDir } from '../../helpers/images.js';

const MiB = 1024 * 1024;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function gptDisk(): Buffer {
  const disk = buildGpt(4 * MiB, [{ first: 2048, last: 4095, name: 'a' }, { first: 4096, last: 6143, name: 'b' }]);
  patternBuffer(0, 1 * MiB, 7).copy(disk, 2048 * 512);
  patternBuffer(0, 1 * MiB, 9).copy(disk, 4096 * 512);
  return disk;
}

function setup() {
  const points = new MemoryCatalog();
  points.addPoint('web1', '20261120T010000Z', { disk0: gptDisk() }, { configs: { 'web1.xml': '<domain/>\n' } });
  points.addPoint('web1', '20261121T010000Z', { disk0: gptDisk(), data: Buffer.alloc(1 * MiB) });
  const tree = new FuseTree({ catalog: points.view('fuse'), log: silentLogger, mountedAt: new Date('2026-11-22T00:00:00Z') });
  return { points, tree };
}

async function names(tree: FuseTree, p: string): Promise<string[]> {
  const n = await tree.lookup(p);
  if (n?.kind !== 'dir') throw new Error(`${p} is not a directory`);
  return [...(await n.children()).keys()].sort();
}

async function readAll(node: Node | undefined): Promise<Buffer> {
  if (node?.kind !== 'file') throw new Error('not a file');
  const f = await node.open();
  const out = Buffer.alloc(node.size);
  // Odd-sized pieces, as a reader seeking around would ask.
  for (let pos = 0; pos < node.size; pos += 100_003) await f.read(out.subarray(pos, Math.min(node.size, pos + 100_003)), pos);
  await f.close();
  return out;
}

describe('FuseTree', () => {
  it('lays out VMs, points, latest, disks, partitions and config files', async () => {
    const { tree } = setup();
    expect(await names(tree, '/')).toEqual(['sessions', 'vms']);
    expect(await names(tree, '/vms')).toEqual(['web1']);
    expect(await names(tree, '/vms/web1')).toEqual(['20261120T010000Z', '20261121T010000Z', 'latest']);
    expect(await tree.lookup('/vms/web1/latest')).toMatchObject({ kind: 'link', target: '20261121T010000Z' });
    expect(await names(tree, '/vms/web1/20261120T010000Z')).toEqual(['config', 'disk0.parts', 'disk0.raw']);
    expect(await names(tree, '/vms/web1/20261121T010000Z')).toEqual(['data.parts', 'data.raw', 'disk0.parts', 'disk0.raw']);
    expect(await names(tree, '/vms/web1/20261120T010000Z/disk0.parts')).toEqual(['1', '2']);
    expect(await names(tree, '/vms/web1/20261121T010000Z/data.parts')).toEqual([]); // no table: no partitions
    const raw = (await tree.lookup('/vms/web1/20261120T010000Z/disk0.raw')) as FileNode;
    expect(raw).toMatchObject({ kind: 'file', size: 4 * MiB, mtime: new Date('2026-11-20T01:00:00Z') });
    const cfg = await tree.lookup('/vms/web1/20261120T010000Z/config/web1.xml');
    expect((await readAll(cfg)).toString()).toBe('<domain/>\n');
    expect(await tree.lookup('/vms/web1/nope')).toBeUndefined();
    expect(await tree.lookup('/vms/web1/20261120T010000Z/disk0.raw/x')).toBeUndefined();
  });

  it('partition files read exactly their partition; each open file is one opener of the shared disk, gone on release; the disk closes once unpublished and unused', async () => {
    const { tree, points } = setup();
    const entry = points.catalog.resolve(pointEntryName('web1', '20261120T010000Z', 'disk0'))!;
    const p1 = await tree.lookup('/vms/web1/20261120T010000Z/disk0.parts/1');
    const p2 = await tree.lookup('/vms/web1/20261120T010000Z/disk0.parts/2');
    expect(p1).toMatchObject({ kind: 'file', size: 1 * MiB });
    // The table parse opened the disk (the catalog keeps it open while published) and released its gate.
    expect([points.opens, points.closes, entry.openers]).toEqual([1, 0, 0]);
    const f1 = await (p1 as FileNode).open();
    const f2 = await (p2 as FileNode).open();
    expect(entry.openers).toBe(2);
    await f1.close();
    await f2.close();
    expect(entry.openers).toBe(0);
    expect((await readAll(p1)).equals(patternBuffer(0, 1 * MiB, 7))).toBe(true);
    expect((await readAll(p2)).equals(patternBuffer(0, 1 * MiB, 9))).toBe(true);
    expect([points.opens, points.closes, entry.openers]).toEqual([1, 0, 0]); // one shared device, every file released
    // The table is parsed once per point disk.
    const open = vi.spyOn(entry, 'open');
    await tree.lookup('/vms/web1/20261120T010000Z/disk0.parts/2');
    expect(open).not.toHaveBeenCalled();
    open.mockRestore();
    // Unpublished: a file still open keeps the device (and reads); releasing it closes the device.
    const f = await (p1 as FileNode).open();
    await points.removePoint('web1', '20261120T010000Z');
    expect(points.closes).toBe(0);
    const head = Buffer.alloc(512);
    await f.read(head, 0);
    expect(head.equals(patternBuffer(0, 1 * MiB, 7).subarray(0, 512))).toBe(true);
    await f.close();
    expect([points.opens, points.closes]).toEqual([1, 1]);
  });

  it('inode numbers are stable across trees (restarts), distinct, and the root is 1', async () => {
    const a = setup().tree;
    const b = setup().tree;
    const paths = ['/vms', '/vms/web1', '/vms/web1/latest', '/vms/web1/20261120T010000Z/disk0.raw', '/vms/web1/20261120T010000Z/disk0.parts/1', '/sessions'];
    const inos = await Promise.all(paths.map(async (p) => (await a.lookup(p))!.ino));
    for (const [i, p] of paths.entries()) expect((await b.lookup(p))!.ino).toBe(inos[i]);
    expect(new Set(inos).size).toBe(inos.length);
    expect((await a.lookup('/'))!.ino).toBe(1);
    for (const ino of inos) expect(ino).toBeLessThanOrEqual(0xffffffff);
  });

  it("follows backups and prunes: the catalog's changes show at once; a removed point's cached partition table is dropped", async () => {
    const { tree, points } = setup();
    expect(await names(tree, '/vms')).toEqual(['web1']);
    points.addPoint('db1', '20261122T020000Z', { disk0: Buffer.alloc(MiB) });
    expect(await names(tree, '/vms')).toEqual(['db1', 'web1']);
    expect(await names(tree, '/vms/web1/20261121T010000Z/disk0.parts')).toEqual(['1', '2']);
    await points.removePoint('web1', '20261121T010000Z');
    expect(await tree.lookup('/vms/web1/latest')).toMatchObject({ target: '20261120T010000Z' });
    expect(await tree.lookup('/vms/web1/20261121T010000Z')).toBeUndefined();
    // The same point published again with other contents: its table is parsed anew.
    points.addPoint('web1', '20261121T010000Z', { disk0: Buffer.alloc(4 * MiB) });
    expect(await names(tree, '/vms/web1/20261121T010000Z/disk0.parts')).toEqual([]);
    expect(await tree.lookup('/vms/web1/latest')).toMatchObject({ target: '20261121T010000Z' });
    // A closed tree stops following the catalog.
    const listening = points.catalog.listenerCount('removed');
    tree.close();
    expect(points.catalog.listenerCount('removed')).toBe(listening - 1);
  });

  it('a malformed partition table is a clear error on the .parts directory; the disk file still works', async () => {
    const bad = buildMbr(2 * MiB, []);
    writeMbrEntry(bad, 0, 0, { type: 0x83, start: 2048, count: 99_999 });
    const points = new MemoryCatalog();
    const [entry] = points.addPoint('x', '20261122T000000Z', { disk0: bad });
    const tree = new FuseTree({ catalog: points.view('fuse'), log: silentLogger });
    const parts = await tree.lookup('/vms/x/20261122T000000Z/disk0.parts');
    expect(parts?.kind).toBe('dir');
    const err = await (parts as { children(): Promise<unknown> }).children().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReboundError);
    expect((err as ReboundError).code).toBe('ERR_PARTITION_TABLE');
    expect((err as Error).message).toMatch(/x@20261122T000000Z\/disk0: malformed partition table: partition 1/);
    expect(toFuseErrno(err)).toBe(Errno.EIO);
    expect((await readAll(await tree.lookup('/vms/x/20261122T000000Z/disk0.raw'))).equals(bad)).toBe(true);
    expect(entry!.openers).toBe(0); // the table parse and the file released the disk
    await points.removePoint('x', '20261122T000000Z');
    expect([points.opens, points.closes]).toEqual([1, 1]);
  });

  it("a session's disk file shows the guest's writes from its overlay over the restore point", async () => {
    const dir = tempDir('rebound-fuse-tree-');
    dirs.push(dir);
    const base = patternBuffer(0, 2 * MiB, 3);
    const overlay = await CowOverlay.open(new BufferDevice(base), { dir: path.join(dir, 'ov'), baseId: 'test' });
    await overlay.write(Buffer.alloc(8192, 0xab), 4096);
    await overlay.write(Buffer.alloc(100, 0xcd), 1 * MiB + 7);
    const { tree, points } = setup();
    expect(await names(tree, '/sessions')).toEqual([]);
    points.addSession({ name: 'rec1', vm: 'web1', pointId: '20261121T010000Z', createdAt: new Date('2026-11-22T05:00:00Z'), filesDir: dir }, { disk0: overlay }, { publish: ['nbd', 'fuse'] });
    points.addSession({ name: 'nbd-only', vm: 'web1', pointId: '20261121T010000Z', createdAt: new Date('2026-11-22T06:00:00Z'), filesDir: dir }, { disk0: overlay }, { publish: ['nbd'] });
    expect(await names(tree, '/sessions')).toEqual(['rec1']);
    expect(await names(tree, '/sessions/rec1')).toEqual(['disk0.raw']);
    const expected = Buffer.from(base);
    expected.fill(0xab, 4096, 4096 + 8192);
    expected.fill(0xcd, MiB + 7, MiB + 107);
    expect((await readAll(await tree.lookup('/sessions/rec1/disk0.raw'))).equals(expected)).toBe(true);
    // Later writes show on the next read of an open file; the session's device stays open.
    const f = await ((await tree.lookup('/sessions/rec1/disk0.raw')) as FileNode).open();
    await overlay.write(Buffer.alloc(4096, 0xef), 0);
    const head = Buffer.alloc(16);
    await f.read(head, 0);
    expect(head.equals(Buffer.alloc(16, 0xef))).toBe(true);
    await f.close();
    await overlay.read(head, 0); // still open
    // A discarded session: its files go, and the session's device is still the session's to close.
    await points.removeSession('rec1');
    expect(await names(tree, '/sessions')).toEqual([]);
    await overlay.read(head, 0);
    await overlay.close();
  });
});

describe('readAt', () => {
  it('reads unaligned ranges from a device with 4 KiB minimum blocks and a small maximum, in aligned pieces', async () => {
    const data = patternBuffer(0, 1 * MiB + 1000, 5);
    const dev = new BufferDevice(data, { caps: { blockSize: { min: 4096, preferred: 4096, max: 16384 } } });
    for (const [off, len] of [[0, 1], [4095, 2], [123, 70_000], [1 * MiB - 10, 1010], [1 * MiB + 999, 1]] as const) {
      const dst = Buffer.alloc(len);
      await readAt(dev, dst, off);
      expect(dst.equals(data.subarray(off, off + len)), `${off}+${len}`).toBe(true);
    }
  });
});

describe('toFuseErrno', () => {
  it('maps block errors, not-found domain errors and everything else', () => {
    expect(toFuseErrno(new BlockError('EROFS', 'x'))).toBe(Errno.EROFS);
    expect(toFuseErrno(new BlockError('EIO', 'x'))).toBe(Errno.EIO);
    expect(toFuseErrno(new BlockError('ESHUTDOWN', 'x'))).toBe(Errno.EIO);
    expect(toFuseErrno(new ReboundError('ERR_POINT_NOT_FOUND', 'x'))).toBe(Errno.ENOENT);
    expect(toFuseErrno(new ReboundError('ERR_CHUNK_CORRUPT', 'x'))).toBe(Errno.EIO);
    expect(toFuseErrno(new Error('bug'))).toBe(Errno.EIO);
  });
});
