/**
 * RepoImage's whole-chunk reads into shared memory (a migration's buffers): the chunk workers fill
 * the caller's SharedArrayBuffer directly, the data equals ordinary reads, the chunks do not enter
 * the cache (a copier streaming the disk must not evict what the VM reads) and nothing is read
 * ahead; a read that is not whole chunks, or into ordinary memory, takes the cached path.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { ChunkCache } from '../../../src/blockdev/base/chunk-cache.js';
import { RepoImage } from '../../../src/blockdev/base/repo-image.js';
import { ChunkStore } from '../../../src/repo/chunk-store.js';
import { setChunkWorkerCount } from '../../../src/repo/chunk-worker.js';
import { ZSTD } from '../../../src/repo/codec.js';
import { makeImage, standardLayout, tempDir } from '../../helpers/images.js';
import { storeContent } from '../../helpers/repo-fixture.js';

const dir = tempDir();
afterAll(() => {
  setChunkWorkerCount(undefined);
  fs.rmSync(dir, { recursive: true, force: true });
});

it.each([2, 0])('whole chunks into shared memory bypass the cache (%i chunk workers)', async (workers) => {
  setChunkWorkerCount(workers);
  const CS = 256 * 1024;
  const size = 4 * 1024 * 1024 - 4096; // the last chunk is short
  const expected = makeImage(path.join(dir, `img-${workers}`), standardLayout(size));
  const store = new ChunkStore(path.join(dir, `chunks-${workers}`), ZSTD);
  const index = await storeContent(store, expected, CS);
  const cache = new ChunkCache(store, 64 * 1024 * 1024);
  const image = new RepoImage(index, cache);
  // Sequential whole-chunk reads, two chunks at a time, into one shared buffer; the last read is short.
  const shared = new Uint8Array(new SharedArrayBuffer(2 * CS));
  for (let off = 0; off < size; off += 2 * CS) {
    const view = shared.subarray(0, Math.min(2 * CS, size - off));
    view.fill(0xaa);
    await image.read(view, off);
    expect(Buffer.from(view).equals(expected.subarray(off, off + view.length)), `at ${off}`).toBe(true);
  }
  expect(cache.stats().chunks).toBe(0); // not cached, nothing read ahead
  // Not whole chunks, or ordinary memory: the cached path (and the same data).
  const part = new Uint8Array(new SharedArrayBuffer(CS));
  await image.read(part, CS / 2);
  expect(Buffer.from(part).equals(expected.subarray(CS / 2, CS / 2 + CS))).toBe(true);
  const plain = Buffer.alloc(CS);
  await image.read(plain, 3 * CS);
  expect(plain.equals(expected.subarray(3 * CS, 4 * CS))).toBe(true);
  expect(cache.stats().chunks).toBeGreaterThan(0);
  // A cached chunk is served into shared memory from the cache.
  const again = new Uint8Array(new SharedArrayBuffer(CS));
  const hits = cache.stats().hits;
  await image.read(again, 3 * CS);
  expect(Buffer.from(again).equals(plain)).toBe(true);
  expect(cache.stats().hits).toBe(hits + 1);
  // A damaged chunk is EIO naming the chunk, never data.
  const damaged = Array.from({ length: index.count }, (_, i) => i).find((i) => i > 3 && index.digest(i) !== undefined)!;
  const digest = index.digest(damaged)!;
  const file = store.pathOf(Buffer.from(digest).toString('hex'));
  const good = fs.readFileSync(file);
  const bad = Buffer.from(good);
  bad[bad.length - 5]! ^= 0x10;
  fs.writeFileSync(file, bad);
  await expect(image.read(shared.subarray(0, CS), damaged * CS)).rejects.toMatchObject({ code: 'EIO', message: expect.stringContaining(`chunk ${damaged} `) });
  fs.writeFileSync(file, good);
});

it('a cache over a reader that cannot fill shared memory (a bucket) keeps the cached path and its readahead', async () => {
  const CS = 64 * 1024;
  const data = Buffer.alloc(8 * CS);
  for (let i = 0; i < data.length; i += 512) data.writeUInt32BE(i + 1, i);
  const chunks = new Map<string, Buffer>();
  const digests: Uint8Array[] = [];
  for (let i = 0; i < 8; i++) {
    const d = Buffer.alloc(32, i + 1);
    chunks.set(d.toString('hex'), data.subarray(i * CS, (i + 1) * CS));
    digests.push(d);
  }
  const cache = new ChunkCache({ readChunk: async (d) => chunks.get(Buffer.from(d).toString('hex'))! }, 16 * 1024 * 1024);
  expect(cache.readChunkInto).toBeUndefined();
  const image = new RepoImage({ size: data.length, chunkSize: CS, count: 8, digest: (i) => digests[i] }, cache, { readahead: 2 });
  const shared = new Uint8Array(new SharedArrayBuffer(CS));
  await image.read(shared, 0);
  await image.read(shared, CS);
  expect(Buffer.from(shared).equals(data.subarray(CS, 2 * CS))).toBe(true);
  await new Promise((r) => setTimeout(r, 10));
  expect(cache.stats().chunks).toBe(4); // two read, two ahead
});
