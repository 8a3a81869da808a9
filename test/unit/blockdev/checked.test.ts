import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { checked, validateExtents } from '../../../src/blockdev/checked.js';
import type { BlockDevice, Capabilities } from '../../../src/blockdev/types.js';
import { BlockError } from '../../../src/errors.js';

/** Delegates every call to `dev`, with some methods or capabilities replaced. */
function wrap(dev: BlockDevice, patch: Partial<BlockDevice> = {}, caps: Partial<Capabilities> = {}): BlockDevice {
  return {
    name: dev.name,
    size: dev.size,
    capabilities: () => ({ ...dev.capabilities(), ...caps }),
    read: (b, o, x) => dev.read(b, o, x),
    write: (b, o, x) => dev.write(b, o, x),
    flush: (x) => dev.flush(x),
    trim: (o, l, x) => dev.trim(o, l, x),
    zero: (o, l, x) => dev.zero(o, l, x),
    extents: (o, l, x) => dev.extents(o, l, x),
    close: () => dev.close(),
    ...patch,
  };
}
const withCaps = (dev: BlockDevice, caps: Partial<Capabilities>): BlockDevice => wrap(dev, {}, caps);

const code = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: BlockError) => e.code);

describe('checked()', () => {
  it('enforces the minimum block size alignment, allowing the tail', async () => {
    const dev = checked(withCaps(new MemoryDevice(8192 + 512), { blockSize: { min: 512, preferred: 4096, max: 65536 } }));
    expect(await code(dev.read(Buffer.alloc(512), 1))).toBe('EINVAL');
    expect(await code(dev.read(Buffer.alloc(100), 0))).toBe('EINVAL');
    expect(await code(dev.read(Buffer.alloc(512), 8192))).toBe('ok');
    expect(await code(dev.read(Buffer.alloc(65536 + 512), 0))).toBe('EINVAL');
  });
  it('checks FUA, trim, zero and fast-zero capabilities', async () => {
    const dev = checked(withCaps(new MemoryDevice(65536), { canFua: false, canTrim: false, canFastZero: false }));
    expect(await code(dev.write(Buffer.alloc(1), 0, { fua: true }))).toBe('EINVAL');
    expect(await code(dev.trim(0, 512))).toBe('EINVAL');
    expect(await code(dev.zero(0, 512, { fast: true }))).toBe('ENOTSUP');
    expect(await code(dev.zero(0, 512))).toBe('ok');
  });
  it('turns a stray exception into EIO and reports it', async () => {
    const broken = wrap(new MemoryDevice(4096), { read: () => Promise.reject(new TypeError('oops')) });
    const seen: string[] = [];
    const dev = checked(broken, { onUnexpectedError: (err, op) => seen.push(`${op}: ${(err as Error).message}`) });
    const err = await dev.read(Buffer.alloc(1), 0).catch((e: BlockError) => e);
    expect(err).toBeInstanceOf(BlockError);
    expect((err as BlockError).code).toBe('EIO');
    expect(seen).toEqual(['read: oops']);
  });
  it('rejects malformed extents from a device with EIO, and clips long ones', () => {
    expect(() => validateExtents([{ offset: 10, length: 5, hole: false, zero: false }], 0, 100, 'x')).toThrow(/malformed/);
    expect(() => validateExtents([], 0, 100, 'x')).toThrow(/no extents/);
    expect(() => validateExtents([{ offset: 0, length: 0, hole: false, zero: false }], 0, 100, 'x')).toThrow(/malformed/);
    expect(
      validateExtents(
        [
          { offset: 0, length: 50, hole: true, zero: true },
          { offset: 50, length: 50, hole: true, zero: true },
          { offset: 100, length: 500, hole: false, zero: false },
        ],
        0,
        120,
        'x',
      ),
    ).toEqual([
      { offset: 0, length: 100, hole: true, zero: true },
      { offset: 100, length: 20, hole: false, zero: false },
    ]);
  });
  it('drain() waits for in-flight requests', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = wrap(new MemoryDevice(4096), { read: () => gate });
    const dev = checked(slow);
    const p = dev.read(Buffer.alloc(1), 0);
    expect(dev.inflight).toBe(1);
    let drained = false;
    const d = dev.drain().then(() => (drained = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(drained).toBe(false);
    release();
    await p;
    await d;
    expect(drained).toBe(true);
  });
  it('refuses to gate a device twice: each opener gets its own gate and error hook', () => {
    const dev = checked(new MemoryDevice(4096));
    expect(() => checked(dev)).toThrow(TypeError);
  });
  it('close() drains, then runs release instead of closing the device below', async () => {
    const mem = new MemoryDevice(4096);
    let released = 0;
    const a = checked(mem, { release: async () => void released++ });
    const b = checked(mem, { release: async () => void released++ });
    await a.write(Buffer.from('x'), 0);
    await a.close();
    expect(released).toBe(1);
    await expect(a.read(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'ESHUTDOWN' });
    const got = Buffer.alloc(1);
    await b.read(got, 0);
    expect(got.toString()).toBe('x');
    await b.close();
    expect(released).toBe(2);
  });
  it('withFileSpan: false for a device without it; a range check as for a read; the device stays open until the send settled', async () => {
    expect(await checked(new MemoryDevice(4096)).withFileSpan(0, 512, async () => undefined)).toBe(false);
    const spans: Array<[number, number]> = [];
    let closedBelow = false;
    const below = wrap(new MemoryDevice(8192), {
      withFileSpan: async (offset, _length, send) => {
        await send({ fd: 42, position: offset });
        return true;
      },
      close: async () => void (closedBelow = true),
    });
    const dev = checked(below);
    expect(await code(dev.withFileSpan(8000, 512, async () => undefined))).toBe('EINVAL');
    expect(await dev.withFileSpan(0, 0, async () => undefined)).toBe(false); // nothing to send
    let finish!: () => void;
    const sending = dev.withFileSpan(4096, 1024, (span) => {
      spans.push([span.fd, span.position]);
      return new Promise<void>((r) => (finish = r));
    });
    await new Promise((r) => setImmediate(r));
    const closing = dev.close();
    await new Promise((r) => setImmediate(r));
    expect(closedBelow).toBe(false); // the send still uses the descriptor
    finish();
    expect(await sending).toBe(true);
    await closing;
    expect(closedBelow).toBe(true);
    expect(spans).toEqual([[42, 4096]]);
  });
  it('readNow: false without device support, for a request a read would refuse, and once closing; the answer otherwise', async () => {
    const plain = checked(new MemoryDevice(8192));
    expect(plain.canReadNow).toBe(false);
    expect(plain.readNow(Buffer.alloc(512), 0)).toBe(false);
    const mem = new MemoryDevice(8192);
    const bytes = Buffer.alloc(8192);
    bytes.fill(7, 512, 1024);
    let asked = 0;
    const readNow = (dst: Uint8Array, offset: number): boolean => (asked++, dst.set(bytes.subarray(offset, offset + dst.length)), true);
    const dev = checked(wrap(mem, { readNow }, { blockSize: { min: 512, preferred: 4096, max: 4096 } }));
    expect(dev.canReadNow).toBe(true);
    expect(dev.readNow(Buffer.alloc(512), 8000)).toBe(false); // past the end
    expect(dev.readNow(Buffer.alloc(512), 100)).toBe(false); // misaligned
    expect(dev.readNow(Buffer.alloc(8192), 0)).toBe(false); // over the maximum payload
    expect(dev.readNow(Buffer.alloc(0), 0)).toBe(false);
    expect(asked).toBe(0);
    const got = Buffer.alloc(512);
    expect(dev.readNow(got, 512)).toBe(true);
    expect(got.every((b) => b === 7)).toBe(true);
    expect(dev.inflight).toBe(0);
    await dev.close();
    expect(dev.readNow(Buffer.alloc(512), 0)).toBe(false);
    expect(asked).toBe(1);
  });
});
