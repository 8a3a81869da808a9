/** FuseTree (the namespace, without a kernel mount), readDevice and the FUSE errno mapper. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { CowOverlay } from '../../../src/blockdev/layers/cow/cow-overlay.js';
import { BlockError, ReboundError } from '../../../src/errors.js';
import { StaticSessionSource, type SessionView } from '../../../src/exports/views.js';
import { Errno, toFuseErrno } from '../../../src/fuse/errno.js';
import { readDevice } from '../../../src/fuse/read.js';
import { FuseTree, type FileNode, type Node } from '../../../src/fuse/tree.js';
import { silentLogger } from '../../../src/util/log.js';
import { buildGpt, buildMbr, writeMbrEntry } from '../../helpers/fuse-disks.js';
import { BufferDevice, MemoryPointSource } from '../../helpers/fuse-views.js';
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

function setup(sessions: SessionView[] = []) {
  const points = new MemoryPointSource();
  points.add('web1', '20261120T010000Z', { disk0: gptDisk() }, { 'web1.xml': '<domain/>\n' });
  points.add('web1', '20261121T010000Z', { disk0: gptDisk(), data: Buffer.alloc(1 * MiB) });
  const tree = new FuseTree({ points, sessions: new StaticSessionSource(sessions), log: silentLogger, cacheMs: 60_000, mountedAt: new Date('2026-11-22T00:00:00Z') });
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

  it('partition files read exactly their partition; the disk is opened per file and closed on release', async () => {
    const { tree, points } = setup();
    const p1 = await tree.lookup('/vms/web1/20261120T010000Z/disk0.parts/1');
    const p2 = await tree.lookup('/vms/web1/20261120T010000Z/disk0.parts/2');
    expect(p1).toMatchObject({ kind: 'file', size: 1 * MiB });
    const opensBefore = points.opens;
    expect((await readAll(p1)).equals(patternBuffer(0, 1 * MiB, 7))).toBe(true);
    expect((await readAll(p2)).equals(patternBuffer(0, 1 * MiB, 9))).toBe(true);
    expect(points.opens - opensBefore).toBe(2);
    expect(points.closes).toBe(points.opens); // the table parse and both files closed their devices
    // The table is parsed once per point disk.
    const opens = points.opens;
    await tree.lookup('/vms/web1/20261120T010000Z/disk0.parts/2');
    expect(points.opens).toBe(opens);
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

  it('follows backups and prunes: the listing is dropped on a change notice', async () => {
    const { tree, points } = setup();
    expect(await names(tree, '/vms')).toEqual(['web1']);
    points.add('db1', '20261122T020000Z', { disk0: Buffer.alloc(MiB) });
    expect(await names(tree, '/vms')).toEqual(['db1', 'web1']);
    points.remove('web1', '20261121T010000Z');
    expect(await tree.lookup('/vms/web1/latest')).toMatchObject({ target: '20261120T010000Z' });
    const lists = points.lists;
    await names(tree, '/vms/db1');
    expect(points.lists).toBe(lists); // cached until the next change
  });

  it('a malformed partition table is a clear error on the .parts directory; the disk file still works', async () => {
    const bad = buildMbr(2 * MiB, []);
    writeMbrEntry(bad, 0, 0, { type: 0x83, start: 2048, count: 99_999 });
    const points = new MemoryPointSource();
    points.add('x', '20261122T000000Z', { disk0: bad });
    const tree = new FuseTree({ points, sessions: new StaticSessionSource(), log: silentLogger });
    const parts = await tree.lookup('/vms/x/20261122T000000Z/disk0.parts');
    expect(parts?.kind).toBe('dir');
    const err = await (parts as { children(): Promise<unknown> }).children().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReboundError);
    expect((err as ReboundError).code).toBe('ERR_PARTITION_TABLE');
    expect((err as Error).message).toMatch(/x@20261122T000000Z\/disk0: malformed partition table: partition 1/);
    expect(toFuseErrno(err)).toBe(Errno.EIO);
    expect((await readAll(await tree.lookup('/vms/x/20261122T000000Z/disk0.raw'))).equals(bad)).toBe(true);
    expect(points.closes).toBe(points.opens);
  });

  it("a session's disk file shows the guest's writes from its overlay over the restore point", async () => {
    const dir = tempDir('rebound-fuse-tree-');
    dirs.push(dir);
    const base = patternBuffer(0, 2 * MiB, 3);
    const overlay = await CowOverlay.open(new BufferDevice(base), { dir: path.join(dir, 'ov'), baseId: 'test' });
    await overlay.write(Buffer.alloc(8192, 0xab), 4096);
    await overlay.write(Buffer.alloc(100, 0xcd), 1 * MiB + 7);
    const session: SessionView = {
      name: 'rec1', vm: 'web1', pointId: '20261121T010000Z', createdAt: new Date('2026-11-22T05:00:00Z'), dir,
      publish: { nbd: true, nfs: false },
      disks: [{ name: 'disk0', size: overlay.size, device: () => overlay }],
    };
    const { tree } = setup([session]);
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
    await overlay.close();
  });
});

describe('readDevice', () => {
  it('reads unaligned ranges from a device with 4 KiB minimum blocks and a small maximum, in aligned pieces', async () => {
    const data = patternBuffer(0, 1 * MiB + 1000, 5);
    const dev = new BufferDevice(data, { caps: { blockSize: { min: 4096, preferred: 4096, max: 16384 } } });
    for (const [off, len] of [[0, 1], [4095, 2], [123, 70_000], [1 * MiB - 10, 1010], [1 * MiB + 999, 1]] as const) {
      const dst = Buffer.alloc(len);
      await readDevice(dev, dst, off);
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
