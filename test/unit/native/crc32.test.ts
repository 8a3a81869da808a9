/**
 * native/crc32.c: libdeflate's CRC-32 gives zlib.crc32's value for any bytes and any value to
 * continue from, from plain and shared memory and any typed array, so chunk files checked by
 * either agree (format.ts chunkCheck, the chunk workers).
 */
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { expect, it } from 'vitest';
import { addonFunctions } from '../../../src/native/addon.js';

const fns = addonFunctions<{ crc32(data: unknown, value?: number): number }>('crc32');

it('the native addon is built with crc32 (tools/build-native.sh, libdeflate-dev)', () => {
  expect(fns).toBeDefined();
});

it.runIf(fns)('equals zlib.crc32 for every length, continuing value and kind of memory', () => {
  for (let n = 0; n < 600; n += 7) {
    const data = crypto.randomBytes(n * 113);
    const value = crypto.randomInt(2 ** 32);
    expect(fns!.crc32(data)).toBe(zlib.crc32(data));
    expect(fns!.crc32(data, value)).toBe(zlib.crc32(data, value));
    expect(fns!.crc32(data.subarray(3, n * 50))).toBe(zlib.crc32(data.subarray(3, n * 50)));
  }
  const big = crypto.randomBytes(1024 * 1024 + 5);
  const shared = new Uint8Array(new SharedArrayBuffer(big.length));
  shared.set(big);
  expect(fns!.crc32(shared, 7)).toBe(zlib.crc32(big, 7));
  const words = new Uint32Array([1, 2, 0xffffffff]);
  expect(fns!.crc32(words)).toBe(zlib.crc32(Buffer.from(words.buffer)));
  expect(() => fns!.crc32('text')).toThrow(TypeError);
  expect(() => fns!.crc32(big, -1)).toThrow(TypeError);
});
