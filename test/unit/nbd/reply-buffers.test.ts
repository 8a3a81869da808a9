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
