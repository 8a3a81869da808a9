import { describe, expect, it } from 'vitest';
import { BufferPool, MAX_POOLED, MIN_POOLED } from '../../../src/util/buffer-pool.js';

const MiB = 1024 * 1024;

describe('BufferPool', () => {
  it('reuses a buffer given back, for the same length only', () => {
    const pool = new BufferPool();
    const a = pool.take(MiB);
    pool.give(a);
    expect(pool.freeBytes).toBe(MiB);
    expect(pool.take(2 * MiB)).not.toBe(a);
    expect(pool.take(MiB)).toBe(a);
    expect(pool.freeBytes).toBe(0);
  });

  it('never hands one buffer to two owners: a second give, or a foreign buffer, is ignored', () => {
    const pool = new BufferPool();
    const a = pool.take(MiB);
    pool.give(a);
    pool.give(a);
    pool.give(Buffer.alloc(MiB));
    const x = pool.take(MiB);
    const y = pool.take(MiB);
    expect(x).toBe(a);
    expect(y).not.toBe(a);
  });

  it('does not pool lengths outside its range or not powers of two', () => {
    const pool = new BufferPool();
    for (const n of [MIN_POOLED / 2, 3 * MIN_POOLED, MAX_POOLED * 2]) {
      const b = pool.take(n);
      expect(b.length).toBe(n);
      pool.give(b);
      expect(pool.freeBytes).toBe(0);
    }
  });

  it('holds at most maxPerSize buffers per length and maxBytes in all', () => {
    const pool = new BufferPool({ maxPerSize: 2, maxBytes: 3 * MiB });
    const bufs = Array.from({ length: 4 }, () => pool.take(MiB));
    for (const b of bufs) pool.give(b);
    expect(pool.freeBytes).toBe(2 * MiB);
    const big = [pool.take(2 * MiB), pool.take(2 * MiB)];
    for (const b of big) pool.give(b);
    expect(pool.freeBytes).toBe(2 * MiB); // a 2 MiB buffer would exceed 3 MiB in all
  });
});
