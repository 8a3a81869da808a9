/**
 * Regression: the shared chunk cache kept its budget only for chunks already loaded. Chunks being
 * loaded were not counted, so with many reads in flight (FUSE, NBD clients, readahead) the cache
 * was full *and* every load held another chunk: the daemon's memory went beyond the configured
 * cache size. Fixed in 7c50435 ("Memory: the chunk cache budget covers chunks being loaded"): before
 * a load starts, least recently used chunks make room for it.
 */
import { expect, it } from 'vitest';
import { ChunkCache } from '../../src/blockdev/base/chunk-cache.js';
import type { ChunkReader } from '../../src/blockdev/base/repo-image.js';
import { memoryChunks } from '../helpers/repo-fixture.js';

const CS = 64 * 1024;

it('keeps cached plus loading chunks within the budget whatever the number of loads in flight', async () => {
  // Sixteen distinct chunks.
  const buf = Buffer.concat(Array.from({ length: 16 }, (_, i) => Buffer.alloc(CS, i + 1)));
  const { index, reader } = memoryChunks(buf, CS);
  const budget = 4 * CS;
  let inFlight = 0;
  let peak = 0;
  const held: Array<() => void> = [];
  let cache!: ChunkCache;
  // A reader whose loads wait until the test lets them finish; it records the memory the cache
  // holds plus what the loads in flight will hold, at the moment each load starts.
  const slow: ChunkReader = {
    readChunk: (digest) => {
      inFlight++;
      peak = Math.max(peak, cache.stats().bytes + inFlight * CS);
      return new Promise<void>((r) => held.push(r)).then(async () => {
        const c = await reader.readChunk(digest);
        inFlight--;
        return c;
      });
    },
  };
  cache = new ChunkCache(slow, budget);
  const release = async (): Promise<void> => {
    for (const r of held.splice(0)) r();
    for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  };
  // Fill the cache, one load at a time.
  for (let i = 0; i < 4; i++) {
    const p = cache.readChunk(index.digest(i)!);
    await release();
    await p;
  }
  expect(cache.stats()).toMatchObject({ chunks: 4, bytes: budget });
  // Then rounds of 1, 2, 3 and 4 loads in flight at once.
  let next = 4;
  for (const n of [1, 2, 3, 4]) {
    const loads = Array.from({ length: n }, () => cache.readChunk(index.digest(next++ % 16)!));
    expect(cache.stats().bytes + inFlight * CS).toBeLessThanOrEqual(budget);
    await release();
    await Promise.all(loads);
  }
  expect(peak).toBeLessThanOrEqual(budget);
  expect(cache.stats().bytes).toBeLessThanOrEqual(budget);
});
