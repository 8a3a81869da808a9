import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ByteReader, ConnectionClosed } from '../../../src/nbd/byte-reader.js';

describe('ByteReader', () => {
  it('assembles exact reads across chunk boundaries and splits big chunks', async () => {
    const s = new PassThrough();
    const r = new ByteReader(s);
    s.write(Buffer.from([1, 2]));
    s.write(Buffer.from([3, 4, 5, 6, 7]));
    expect([...(await r.readExact(3))]).toEqual([1, 2, 3]);
    expect([...(await r.readExact(2))]).toEqual([4, 5]);
    const pending = r.readExact(4);
    s.write(Buffer.from([8, 9]));
    expect([...(await pending)]).toEqual([6, 7, 8, 9]);
  });
  it('rejects pending and later reads with ConnectionClosed when the stream ends', async () => {
    const s = new PassThrough();
    const r = new ByteReader(s);
    s.write(Buffer.from([1]));
    const p = r.readExact(2);
    s.end();
    await expect(p).rejects.toBeInstanceOf(ConnectionClosed);
    await expect(r.readExact(1)).resolves.toBeDefined(); // the buffered byte is still there
    await expect(r.readExact(1)).rejects.toBeInstanceOf(ConnectionClosed);
  });
  it('skips large amounts without keeping them', async () => {
    const s = new PassThrough();
    const r = new ByteReader(s);
    s.write(Buffer.alloc(3 * 1024 * 1024 + 1, 7));
    await r.skip(3 * 1024 * 1024);
    expect([...(await r.readExact(1))]).toEqual([7]);
  });
  it('pauses the stream while too much is buffered and nobody reads', async () => {
    const s = new PassThrough();
    const r = new ByteReader(s, 1024);
    s.write(Buffer.alloc(4096));
    await new Promise((res) => setImmediate(res));
    expect(s.isPaused()).toBe(true);
    await r.readExact(4096);
    const next = r.readExact(1);
    expect(s.isPaused()).toBe(false);
    s.write(Buffer.alloc(1));
    await next;
  });
});

describe('ByteReader.tryTake', () => {
  it('takes what has arrived without a promise, and nothing while bytes are missing', async () => {
    const s = new PassThrough();
    const r = new ByteReader(s);
    expect(r.tryTake(1)).toBeUndefined();
    s.write(Buffer.from([1, 2]));
    s.write(Buffer.from([3, 4, 5]));
    await new Promise((resolve) => setImmediate(resolve));
    expect([...r.tryTake(3)!]).toEqual([1, 2, 3]);
    expect(r.tryTake(3)).toBeUndefined();
    expect(r.available).toBe(2);
    const pending = r.readExact(3);
    expect(r.tryTake(1)).toBeUndefined(); // a pending read comes first
    s.write(Buffer.from([6]));
    expect([...(await pending)]).toEqual([4, 5, 6]);
  });
});
