/** util/buffer-pool.ts: the READ reply buffers of NFS and iSCSI. */
import { describe, expect, it } from 'vitest';
import { BufferPool, MAX_POOLED, MIN_POOLED } from '../../../src/util/buffer-pool.js';

const MiB = 1024 * 1024;

describe('BufferPool', () => {
  it('recycles large buffers by capacity (4 KiB granules) and leaves small ones to Node', () => {
    const pool = new BufferPool();
    const a = pool.acquire(65536 + 104);
    expect(a.length).toBe(65536 + 104);
    expect(a.buffer.byteLength).toBe(65536 + 4096);
    pool.release(a);
    expect(pool.idleBytes).toBe(65536 + 4096);
    const b = pool.acquire(65536 + 200);
    expect(b.buffer).toBe(a.buffer);
    expect(pool.idleBytes).toBe(0);
    expect(pool.acquire(2 * MiB).buffer).not.toBe(a.buffer);
    for (const n of [100, MIN_POOLED - 1, MAX_POOLED + 1]) {
      const x = pool.acquire(n);
      expect(x.length).toBe(n);
      pool.release(x);
      expect(pool.idleBytes).toBe(0);
    }
  });

  it('never hands one buffer to two owners: a second release, a foreign buffer or a view inside one is ignored', () => {
    const pool = new BufferPool();
    const a = pool.acquire(MiB);
    pool.release(a);
    pool.release(a);
    pool.release(Buffer.alloc(MiB));
    expect(pool.idleBytes).toBe(MiB);
    const x = pool.acquire(MiB);
    const y = pool.acquire(MiB);
    expect(x.buffer).toBe(a.buffer);
    expect(y.buffer).not.toBe(a.buffer);
    pool.release(y.subarray(4096));
    expect(pool.idleBytes).toBe(0);
  });

  it('keeps at most maxIdleBytes for reuse', () => {
    const pool = new BufferPool({ maxIdleBytes: 3 * MiB });
    const bufs = Array.from({ length: 5 }, () => pool.acquire(MiB));
    for (const b of bufs) pool.release(b);
    expect(pool.idleBytes).toBe(3 * MiB);
  });
});
