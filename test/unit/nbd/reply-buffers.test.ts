import { describe, expect, it } from 'vitest';
import { ReplyBufferPool } from '../../../src/nbd/reply-buffers.js';

describe('ReplyBufferPool', () => {
  it('reuses buffers of sizes clients repeat', () => {
    const pool = new ReplyBufferPool(8 * 1024 * 1024);
    const a = pool.acquire(65536);
    pool.release(a); // asked once: not kept
    expect(pool.pooledBytes).toBe(0);
    const b = pool.acquire(65536);
    pool.release(b);
    expect(pool.pooledBytes).toBe(65536);
    expect(pool.acquire(65536)).toBe(b);
    expect(pool.pooledBytes).toBe(0);
  });

  it('keeps nothing for sizes asked for once (a fuzzer or a hostile client)', () => {
    const pool = new ReplyBufferPool(64 * 1024 * 1024);
    for (let i = 0; i < 2000; i++) pool.release(pool.acquire(4096 + 16 * i));
    expect(pool.pooledBytes).toBe(0);
  });

  it('stays within its byte budget and ignores small and offset buffers', () => {
    const pool = new ReplyBufferPool(1024 * 1024);
    const bufs = Array.from({ length: 8 }, () => pool.acquire(256 * 1024));
    for (const b of bufs) pool.release(b);
    expect(pool.pooledBytes).toBe(1024 * 1024);
    pool.acquire(100);
    pool.release(Buffer.alloc(100));
    expect(pool.pooledBytes).toBe(1024 * 1024);
  });
});

describe('ReplyBufferPool when full', () => {
  const KiB = 1024;

  it('makes room for the size asked for now by dropping sizes asked for longer ago', () => {
    // A copy with 256 KiB reads fills the pool; then a client reads 1 MiB at a time.
    const pool = new ReplyBufferPool(1024 * KiB);
    const small = Array.from({ length: 4 }, () => pool.acquire(256 * KiB));
    pool.acquire(256 * KiB);
    for (const b of small) pool.release(b);
    expect(pool.pooledBytes).toBe(1024 * KiB);
    const big = pool.acquire(1024 * KiB);
    pool.release(big); // asked once: not kept
    const again = pool.acquire(1024 * KiB);
    pool.release(again);
    expect(pool.pooledBytes).toBe(1024 * KiB);
    expect(pool.acquire(1024 * KiB)).toBe(again); // reused, not allocated
  });

  it('never drops buffers of a size asked for more recently', () => {
    const pool = new ReplyBufferPool(512 * KiB);
    const a = [pool.acquire(256 * KiB), pool.acquire(256 * KiB)];
    const b = [pool.acquire(128 * KiB), pool.acquire(128 * KiB)];
    for (const x of b) pool.release(x); // 256 KiB pooled, of the size asked for last
    pool.release(a[0]!); // 512 KiB: full
    expect(pool.pooledBytes).toBe(512 * KiB);
    pool.release(a[1]!); // would need room: 256 KiB was asked for before 128 KiB, so it is not kept
    expect(pool.pooledBytes).toBe(512 * KiB);
    expect(pool.acquire(128 * KiB)).toBe(b[1]);
    expect(pool.acquire(128 * KiB)).toBe(b[0]);
  });
});

it('ReplyBufferPool keeps pooling new sizes after many sizes came and went', () => {
  const pool = new ReplyBufferPool(64 * 1024 * 1024);
  for (let i = 0; i < 200; i++) {
    const size = 8192 + 512 * i;
    const a = pool.acquire(size);
    const b = pool.acquire(size);
    pool.release(a);
    pool.release(b);
    expect(pool.acquire(size)).toBe(b); // pooled, then taken again
    pool.acquire(size);
  }
  expect(pool.pooledBytes).toBe(0);
});
