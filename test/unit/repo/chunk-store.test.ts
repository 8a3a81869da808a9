import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ChunkCache } from '../../../src/blockdev/base/chunk-cache.js';
import { RepoImage } from '../../../src/blockdev/base/repo-image.js';
import { checked } from '../../../src/blockdev/checked.js';
import { ChunkStore, sha256 } from '../../../src/repo/chunk-store.js';
import { DEFLATE, NONE, ZSTD } from '../../../src/repo/codec.js';
import { digestHex, FixedIndex } from '../../../src/repo/format.js';
import { ReboundError, BlockError } from '../../../src/errors.js';
import { tempDir } from '../../helpers/images.js';
import { memoryChunks, storeContent } from '../../helpers/repo-fixture.js';

const dirs: string[] = [];
const dir = (): string => {
  const d = tempDir();
  dirs.push(d);
  return d;
};
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
const sha = (b: Uint8Array): Buffer => crypto.createHash('sha256').update(b).digest();

describe('ChunkStore', () => {
  it('stores compressed chunks once, reads them back verified', async () => {
    const store = new ChunkStore(path.join(dir(), 'chunks'), DEFLATE);
    const text = Buffer.from('compressible '.repeat(10_000));
    const first = await store.put(sha(text), text);
    expect(first.stored).toBe(true);
    expect(first.bytes).toBeLessThan(text.length / 10);
    expect((await store.put(sha(text), text)).stored).toBe(false);
    expect(Buffer.from(await store.readChunk(sha(text))).equals(text)).toBe(true);
    const random = crypto.randomBytes(65536);
    expect((await store.put(sha(random), random)).bytes).toBe(65536 + 16); // stored uncompressed
    expect(Buffer.from(await store.readChunk(sha(random))).equals(random)).toBe(true);
    const all = [];
    for await (const c of store.list()) all.push(c.hex);
    expect(all.sort()).toEqual([sha(text).toString('hex'), sha(random).toString('hex')].sort());
  });

  it('stores zstd chunks and still reads chunks an older codec wrote', async () => {
    const d = path.join(dir(), 'chunks');
    const old = new ChunkStore(d, DEFLATE);
    const a = Buffer.from('written with deflate '.repeat(5000));
    await old.put(sha(a), a);
    const store = new ChunkStore(d, ZSTD);
    const b = Buffer.from('written with zstd '.repeat(5000));
    const put = await store.put(sha(b), b);
    expect(put.bytes).toBeLessThan(b.length / 10);
    expect(fs.readFileSync(store.pathOf(sha(b).toString('hex')))[5]).toBe(ZSTD.id);
    expect(Buffer.from(await store.readChunk(sha(a))).equals(a)).toBe(true);
    expect(Buffer.from(await store.readChunk(sha(b))).equals(b)).toBe(true);
  });

  it('detects corrupt and missing chunks', async () => {
    const store = new ChunkStore(path.join(dir(), 'chunks'), DEFLATE);
    const data = crypto.randomBytes(4096);
    await store.put(sha(data), data);
    const file = store.pathOf(sha(data).toString('hex'));
    const bytes = fs.readFileSync(file);
    bytes[100] ^= 0xff;
    fs.writeFileSync(file, bytes);
    await expect(store.readChunk(sha(data))).rejects.toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
    await expect(store.readChunk(sha(Buffer.from('nothing')))).rejects.toMatchObject({ code: 'ERR_CHUNK_MISSING' });
  });

  it('never deletes a claimed chunk; a claim during deletion rewrites it', async () => {
    const store = new ChunkStore(path.join(dir(), 'chunks'), DEFLATE);
    const data = crypto.randomBytes(4096);
    const d = sha(data);
    await store.put(d, data);
    const claim = store.claim();
    claim.set.add(d.toString('hex'));
    expect(await store.remove(d.toString('hex'))).toBe(false);
    claim.release();
    const removing = store.remove(d.toString('hex'));
    const again = await store.put(d, data, store.claim().set); // arrives while the unlink runs
    await removing;
    expect(again.stored).toBe(true);
    expect(Buffer.from(await store.readChunk(d)).equals(data)).toBe(true);
  });
});

describe('FixedIndex', () => {
  it('round-trips and marks zero chunks', () => {
    const idx = new FixedIndex(10 * 1024 * 1024 + 5, 1024 * 1024);
    expect(idx.count).toBe(11);
    idx.setDigest(3, sha(Buffer.from('x')));
    const back = FixedIndex.decode(idx.encode(), 't');
    expect(back.size).toBe(10 * 1024 * 1024 + 5);
    expect(Buffer.from(back.digest(3)!).equals(sha(Buffer.from('x')))).toBe(true);
    expect(back.digest(4)).toBeUndefined();
    expect(back.chunkLength(10)).toBe(5);
    expect(() => FixedIndex.decode(idx.encode().subarray(0, 100), 't')).toThrow(ReboundError);
  });
});

describe('RepoImage and ChunkCache', () => {
  it('shares one load between concurrent readers and serves repeats from the cache', async () => {
    const content = crypto.randomBytes(4 * 1024 * 1024);
    const { index, reader } = memoryChunks(content, 1024 * 1024);
    const cache = new ChunkCache(reader, 64 * 1024 * 1024);
    const img = new RepoImage(index, cache);
    const a = Buffer.alloc(4096);
    const b = Buffer.alloc(4096);
    await Promise.all([img.read(a, 0), img.read(b, 8192)]);
    expect(reader.reads).toBe(1);
    await img.read(a, 500_000);
    expect(reader.reads).toBe(1);
    expect(cache.stats()).toMatchObject({ chunks: 1, misses: 1 });
  });

  it('counts chunks being loaded against its budget', async () => {
    const MiB = 1024 * 1024;
    const content = crypto.randomBytes(8 * MiB);
    const { index, reader } = memoryChunks(content, MiB);
    const cache = new ChunkCache(reader, 4 * MiB);
    for (let i = 0; i < 4; i++) await cache.readChunk(index.digest(i)!);
    expect(cache.stats()).toMatchObject({ chunks: 4, bytes: 4 * MiB });
    // Three loads in flight: three cached chunks make room before the reads start.
    const loads = [4, 5, 6].map((i) => cache.readChunk(index.digest(i)!));
    expect(cache.stats()).toMatchObject({ chunks: 1, bytes: MiB });
    await Promise.all(loads);
    expect(cache.stats()).toMatchObject({ chunks: 4, bytes: 4 * MiB });
  });

  it('reads ahead on sequential access', async () => {
    const content = crypto.randomBytes(8 * 1024 * 1024);
    const { index, reader } = memoryChunks(content, 1024 * 1024);
    const img = new RepoImage(index, new ChunkCache(reader, 64 * 1024 * 1024));
    const buf = Buffer.alloc(1024 * 1024);
    await img.read(buf, 0);
    await img.read(buf, 1024 * 1024); // sequential: prefetches chunks 2..5
    await new Promise((r) => setTimeout(r, 10));
    expect(reader.reads).toBe(6);
    await img.read(buf, 3 * 1024 * 1024);
    expect(reader.reads).toBe(6);
  });

  it('answers EIO, not wrong data, for a corrupt chunk; extents mark zero chunks as holes', async () => {
    const d = dir();
    const store = new ChunkStore(path.join(d, 'chunks'), DEFLATE);
    const content = Buffer.alloc(3 * 65536);
    crypto.randomFillSync(content, 0, 65536);
    crypto.randomFillSync(content, 2 * 65536, 65536);
    const index = await storeContent(store, content, 65536);
    const img = checked(new RepoImage(index, store));
    expect(await img.extents(0, content.length)).toEqual([
      { offset: 0, length: 65536, hole: false, zero: false },
      { offset: 65536, length: 65536, hole: true, zero: true },
      { offset: 131072, length: 65536, hole: false, zero: false },
    ]);
    const file = store.pathOf(Buffer.from(index.digest(2)!).toString('hex'));
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(file, bytes);
    const err = await img.read(Buffer.alloc(10), 2 * 65536).catch((e) => e);
    expect(err).toBeInstanceOf(BlockError);
    expect(err.code).toBe('EIO');
    expect(err.message).toMatch(/chunk 2 .* corrupt/);
    const ok = Buffer.alloc(10);
    await img.read(ok, 0);
    expect(ok.equals(content.subarray(0, 10))).toBe(true);
  });
});

describe('ChunkStore.totals', () => {
  it('walks once, then follows put() and remove() without walking again', async () => {
    const dir = tempDir('rebound-totals-');
    try {
      const store = new ChunkStore(path.join(dir, 'chunks'), NONE);
      const a = Buffer.alloc(4096, 1);
      const da = await sha256(a);
      await store.put(da, a);
      expect(await store.totals()).toEqual({ chunks: 1, storedBytes: fs.statSync(store.pathOf(digestHex(da))).size });
      const b = Buffer.alloc(4096, 2);
      const db = await sha256(b);
      const put = await store.put(db, b);
      await store.put(db, b); // deduplicated: no change
      let walks = 0;
      const list = store.list.bind(store);
      store.list = () => (walks++, list());
      const sizeA = fs.statSync(store.pathOf(digestHex(da))).size;
      expect(await store.totals()).toEqual({ chunks: 2, storedBytes: sizeA + put.bytes });
      await store.remove(digestHex(da), sizeA);
      expect(await store.totals()).toEqual({ chunks: 1, storedBytes: put.bytes });
      expect(walks).toBe(0);
      // A removal without its size: the next call walks again and is right.
      await store.remove(digestHex(db));
      expect(await store.totals()).toEqual({ chunks: 0, storedBytes: 0 });
      expect(walks).toBe(1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
