/**
 * Regression: prune could delete a restore point that an incremental backup or a restore was still
 * using. An incremental reuses its base point's chunks without reading them, and a restore reads
 * its point's index once and then its chunks; with the point pruned (and gc run) in between, the
 * new point referenced missing chunks or the restore failed half way. Found while building
 * verify/prune/gc and fixed in f800184 ("verify, prune and gc ...; pin points used by incrementals
 * and restores"): both pin their point for as long as they run.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { backup } from '../../src/repo/ingest.js';
import type { ChunkStore } from '../../src/repo/chunk-store.js';
import { Repository } from '../../src/repo/repository.js';
import { restore } from '../../src/repo/restore.js';
import type { BackupSource } from '../../src/repo/sources.js';
import { patternBuffer, tempDir } from '../helpers/images.js';

const CS = 64 * 1024;
const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const r of repos.splice(0)) await r.close();
  dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

async function repoWithPoint(): Promise<{ d: string; repo: Repository; id: string; image: Buffer }> {
  const d = tempDir('rebound-regress-pin-');
  dirs.push(d);
  const repo = await Repository.open(path.join(d, 'data'), { chunkSize: CS });
  repos.push(repo);
  const image = patternBuffer(0, 8 * CS);
  fs.writeFileSync(path.join(d, 'src.img'), image);
  const m = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: path.join(d, 'src.img') }] });
  return { d, repo, id: m.id, image };
}

it('an incremental backup pins its base point while it runs', async () => {
  const { repo, id, image } = await repoWithPoint();
  const during: Array<{ pinned: boolean; deleted: string }> = [];
  const device = new MemoryDevice(image.length);
  await device.write(image, 0);
  const read = device.read.bind(device);
  vi.spyOn(device, 'read').mockImplementation(async (dst: Uint8Array, offset: number) => {
    const deleted = await repo.deletePoint('vm1', id).then(
      () => 'deleted',
      (err: { code?: string }) => err.code ?? 'error',
    );
    during.push({ pinned: repo.isPinned('vm1', id), deleted });
    return read(dst, offset);
  });
  // A source with a dirty bitmap that marks one chunk (as qemu-nbd -B would).
  const source: BackupSource = { description: 'test:dirty', device, dirtyRanges: async () => [[2 * CS, CS]] };
  const m = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source }], dirtyBitmap: 'b0' });
  expect(m.disks[0]!.incremental).toMatchObject({ basePoint: id, dirtyChunks: 1 });
  expect(during).toEqual([{ pinned: true, deleted: 'ERR_INVALID_ARGUMENT' }]);
  expect((await repo.points('vm1')).map((p) => p.id)).toContain(id);
  expect(repo.isPinned('vm1', id)).toBe(false);
});

it('a restore pins its point while it runs', async () => {
  const { d, repo, id, image } = await repoWithPoint();
  const pinnedDuringReads: boolean[] = [];
  // A restore to a file has the chunk workers write each chunk (copyChunkTo).
  const store = repo.store as ChunkStore;
  const copyChunkTo = store.copyChunkTo.bind(store);
  vi.spyOn(store, 'copyChunkTo').mockImplementation(async (digest, sink, offset) => {
    pinnedDuringReads.push(repo.isPinned('vm1', id));
    return copyChunkTo(digest, sink, offset);
  });
  const to = path.join(d, 'restored.img');
  await restore(repo, { vm: 'vm1', point: id, disk: 'disk0', to });
  expect(pinnedDuringReads.length).toBe(8);
  expect(pinnedDuringReads.every(Boolean)).toBe(true);
  expect(repo.isPinned('vm1', id)).toBe(false);
  expect(fs.readFileSync(to).equals(image)).toBe(true);
});
