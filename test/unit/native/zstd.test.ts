/**
 * native/zstd.c: zstd frames (as the repository's codec writes them) decompressed into the
 * caller's memory, a SharedArrayBuffer's view included; a frame that does not decode or does not
 * fit is an ECORRUPT error, never a write outside the destination.
 */
import crypto from 'node:crypto';
import { expect, it } from 'vitest';
import { addonFunctions } from '../../../src/native/addon.js';
import { ZSTD } from '../../../src/repo/codec.js';

interface ZstdFns {
  zstdDecompressInto(src: Uint8Array, dst: Uint8Array): number;
  zstdCompressInto(src: Uint8Array, dst: Uint8Array, level: number): number;
  zstdCompressBound(n: number): number;
}
const fns = addonFunctions<ZstdFns>('zstdDecompressInto', 'zstdCompressInto', 'zstdCompressBound');

it('the native addon is built with zstd (tools/build-native.sh, libzstd-dev)', () => {
  expect(fns).toBeDefined();
});

it.runIf(fns)('decodes the codec’s frames into plain and shared memory, and refuses what does not fit or decode', async () => {
  const data = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < data.length; i += 64) data.write(`block ${i} of a VM disk `, i);
  crypto.randomFillSync(data, 512 * 1024, 128 * 1024);
  const frame = await ZSTD.compress(data);
  // Into a view: the bytes around it are untouched (the view's own spare room may serve as scratch).
  const plain = Buffer.alloc(data.length + 300, 0xee);
  expect(fns!.zstdDecompressInto(frame, plain.subarray(100, 100 + data.length + 100))).toBe(data.length);
  expect(plain.subarray(100, 100 + data.length).equals(data)).toBe(true);
  expect(plain.subarray(0, 100).every((b) => b === 0xee)).toBe(true);
  expect(plain.subarray(100 + data.length + 100).every((b) => b === 0xee)).toBe(true);
  const shared = new Uint8Array(new SharedArrayBuffer(data.length));
  expect(fns!.zstdDecompressInto(frame, shared)).toBe(data.length);
  expect(Buffer.from(shared).equals(data)).toBe(true);
  // Too small a destination: an error, and nothing beyond it touched.
  const small = Buffer.alloc(data.length, 0);
  expect(() => fns!.zstdDecompressInto(frame, small.subarray(0, data.length - 1))).toThrow(expect.objectContaining({ code: 'ECORRUPT' }));
  expect(small[data.length - 1]).toBe(0);
  expect(() => fns!.zstdDecompressInto(Buffer.from('not a zstd frame'), plain)).toThrow(expect.objectContaining({ code: 'ECORRUPT' }));
  expect(() => fns!.zstdDecompressInto(frame.subarray(0, frame.length >> 1), plain)).toThrow(expect.objectContaining({ code: 'ECORRUPT' }));
  expect(() => (fns!.zstdDecompressInto as (a: unknown, b: unknown) => number)('x', plain)).toThrow(TypeError);
});

it.runIf(fns)('compresses into the caller’s memory frames the codec (and the decoder) read back; too small a destination is ENOSPC', async () => {
  const data = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < data.length; i += 48) data.write(`record ${i} of a database page `, i);
  const dst = Buffer.alloc(fns!.zstdCompressBound(data.length));
  expect(dst.length).toBeGreaterThanOrEqual(data.length);
  const n = fns!.zstdCompressInto(data, dst, 1);
  expect(n).toBeGreaterThan(0);
  expect(n).toBeLessThan(data.length / 4);
  const frame = dst.subarray(0, n);
  expect(Buffer.from(await ZSTD.decompress(frame, data.length)).equals(data)).toBe(true);
  const back = Buffer.alloc(data.length);
  expect(fns!.zstdDecompressInto(frame, back)).toBe(data.length);
  expect(back.equals(data)).toBe(true);
  const random = crypto.randomBytes(64 * 1024);
  expect(() => fns!.zstdCompressInto(random, Buffer.alloc(1000), 1)).toThrow(expect.objectContaining({ code: 'ENOSPC' }));
});
