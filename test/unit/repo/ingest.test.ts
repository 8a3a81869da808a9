/** Backups from raw files into a repository, read back through RepoImage. */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checked } from '../../../src/blockdev/checked.js';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { backup } from '../../../src/repo/ingest.js';
import { Repository } from '../../../src/repo/repository.js';
import { makeImage, tempDir } from '../../helpers/images.js';

const dirs: string[] = [];
const dir = (): string => {
  const d = tempDir();
  dirs.push(d);
  return d;
};
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

async function readAll(repo: Repository, vm: string, point: string, disk: string): Promise<Buffer> {
  const m = await repo.point(vm, point);
  const img = checked(await repo.openImage(m, disk));
  const out = Buffer.alloc(img.size);
  await img.read(out, 0);
  await img.close();
  return out;
}

describe('backup from raw files', () => {
  it('stores a complete restore point that reads back exactly, dedups the second backup, survives reopen', async () => {
    const d = dir();
    const src = path.join(d, 'disk.img');
    const content = makeImage(src, { size: 8 * 1024 * 1024 + 12345, data: [[0, 3 * 1024 * 1024], [6 * 1024 * 1024, 100_000]] });
    const cfg = path.join(d, 'vm1.xml');
    fs.writeFileSync(cfg, '<domain/>');
    let repo = await Repository.open(path.join(d, 'data'), { chunkSize: 1024 * 1024 });
    const progress: number[] = [];
    const m1 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }], tags: ['nightly'], configs: [cfg] }, {
      onProgress: (p) => progress.push(p.doneBytes),
    });
    expect(m1.disks[0]).toMatchObject({ name: 'disk0', size: content.length, chunks: 9, zeroChunks: 5, newChunks: 4 });
    expect(progress.at(-1)).toBe(content.length);
    expect((await readAll(repo, 'vm1', 'latest', 'disk0')).equals(content)).toBe(true);
    expect(fs.readFileSync(path.join(repo.pointDir('vm1', m1.id), 'config', 'vm1.xml'), 'utf8')).toBe('<domain/>');

    // Change 1 byte in one chunk: the second backup stores exactly one new chunk.
    const fd = fs.openSync(src, 'r+');
    fs.writeSync(fd, Buffer.from([0x5a]), 0, 1, 2 * 1024 * 1024 + 7);
    fs.closeSync(fd);
    content[2 * 1024 * 1024 + 7] = 0x5a;
    const m2 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    expect(m2.id).not.toBe(m1.id);
    expect(m2.disks[0]!.newChunks).toBe(1);
    await repo.close();

    repo = await Repository.open(path.join(d, 'data'));
    expect((await repo.points('vm1')).map((p) => p.id)).toEqual([m1.id, m2.id]);
    expect((await readAll(repo, 'vm1', m2.id, 'disk0')).equals(content)).toBe(true);
    // The catalog is only an index: rebuilt from the files it finds the same points.
    expect(await repo.reindex()).toBe(2);
    expect((await repo.vms())).toEqual([{ vm: 'vm1', points: 2, latest: m2.id }]);
    await expect(repo.point('vm1', '20000101T000000Z')).rejects.toMatchObject({ code: 'ERR_POINT_NOT_FOUND' });
    await expect(repo.point('nope')).rejects.toMatchObject({ code: 'ERR_VM_NOT_FOUND' });
    await repo.close();
  });

  it('leaves no half restore point when the backup fails or is aborted', async () => {
    const d = dir();
    const src = path.join(d, 'disk.img');
    makeImage(src, { size: 4 * 1024 * 1024, data: [[0, 4 * 1024 * 1024]] });
    const repo = await Repository.open(path.join(d, 'data'), { chunkSize: 65536 });
    const ac = new AbortController();
    const p = backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] }, {
      signal: ac.signal,
      onProgress: (x) => x.doneBytes > 1024 * 1024 && ac.abort(new Error('stop')),
    });
    await expect(p).rejects.toThrow('stop');
    await expect(backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: path.join(d, 'missing.img') }] })).rejects.toMatchObject({
      code: 'ERR_BACKUP_SOURCE',
    });
    expect(await repo.points()).toEqual([]);
    expect(fs.readdirSync(path.join(repo.dir, 'tmp'))).toEqual([]);
    expect(fs.readdirSync(path.join(repo.dir, 'vms'))).toEqual([]);
    await repo.close();
  });
});

describe('backup from a BackupSource (a read-only device plus what may be skipped)', () => {
  it("does not read ranges the device's extents call zero, and closes the device", async () => {
    const d = dir();
    const repo = await Repository.open(path.join(d, 'data'), { chunkSize: 65536 });
    const device = new MemoryDevice(4 * 1024 * 1024);
    await device.write(Buffer.alloc(65536, 0x5a), 1024 * 1024);
    let closed = false;
    const close = device.close.bind(device);
    const content = Buffer.alloc(device.size);
    await device.read(content, 0);
    device.close = async () => {
      closed = true;
      await close();
    };
    const m = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: { description: 'memory:test', device } }] });
    expect(m.disks[0]).toMatchObject({ source: 'memory:test', readBytes: 65536, size: 4 * 1024 * 1024 });
    expect(closed).toBe(true);
    expect((await readAll(repo, 'vm1', m.id, 'disk0')).equals(content)).toBe(true);
    await repo.close();
  });
});

describe('which chunks a backup expects to be new (put with expectNew: one conditional create on S3)', () => {
  it('every chunk of a first backup; none the previous point had at its place; after 16, not when most turn out to be there', async () => {
    const d = dir();
    const src = path.join(d, 'disk.img');
    makeImage(src, { size: 200 * 64 * 1024, data: [[0, 200 * 64 * 1024]] });
    const repo = await Repository.open(path.join(d, 'data'), { chunkSize: 64 * 1024 });
    const calls: Array<{ expectNew: boolean | undefined; stored: boolean }> = [];
    const put = repo.store.put.bind(repo.store);
    repo.store.put = async (digest, raw, claims, opts) => {
      const r = await put(digest, raw, claims, opts);
      calls.push({ expectNew: opts?.expectNew, stored: r.stored });
      return r;
    };
    try {
      const first = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
      expect(first.disks[0]!.newChunks).toBe(200);
      expect(calls.filter((c) => c.expectNew)).toHaveLength(200);

      // The same disk again: the previous point has every chunk at its place; nothing is expected new.
      calls.length = 0;
      await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
      expect(calls).toHaveLength(200);
      expect(calls.filter((c) => c.expectNew)).toHaveLength(0);

      // Another VM with the same data: the first guesses find their chunks there, and the rest are
      // checked first (at most 16 guesses plus those already in flight: 8 readers).
      calls.length = 0;
      const other = await backup(repo, { vm: 'vm2', disks: [{ name: 'disk0', source: src }] });
      expect(other.disks[0]!.newChunks).toBe(0);
      const guessed = calls.filter((c) => c.expectNew).length;
      expect(guessed).toBeGreaterThanOrEqual(16);
      expect(guessed).toBeLessThanOrEqual(16 + 8);
    } finally {
      await repo.close();
    }
  });
});
