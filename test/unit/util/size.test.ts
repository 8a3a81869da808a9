import { describe, expect, it } from 'vitest';
import { formatSize, formatSizeExact, parseSize } from '../../../src/util/size.js';
import { ReboundError } from '../../../src/errors.js';

describe('parseSize', () => {
  it.each([
    ['0', 0],
    ['4096', 4096],
    ['64K', 65536],
    ['64k', 65536],
    ['4M', 4 * 1024 ** 2],
    ['1G', 1024 ** 3],
    ['1.5G', 1.5 * 1024 ** 3],
    ['2TiB', 2 * 1024 ** 4],
    [' 10 MB ', 10 * 1024 ** 2],
    [512, 512],
  ])('%s -> %d', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['', 'abc', '-1', '1X', '1.3', '1e3', '99999999999P'])('rejects %j with ERR_INVALID_SIZE', (text) => {
    expect(() => parseSize(text)).toThrow(ReboundError);
    try {
      parseSize(text);
    } catch (e) {
      expect((e as ReboundError).code).toBe('ERR_INVALID_SIZE');
    }
  });
});

describe('formatSize', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1536, '1.5 KiB'],
    [64 * 1024 ** 2, '64 MiB'],
    [1024 ** 4, '1 TiB'],
  ])('%d -> %s', (n, s) => expect(formatSize(n)).toBe(s));
});

describe('formatSizeExact', () => {
  it.each([
    [0, '0'],
    [1536, '1536'],
    [4096, '4K'],
    [256 * 1024 ** 2, '256M'],
    [50 * 1024 ** 3, '50G'],
    [1.5 * 1024 ** 3, '1536M'],
    [2 * 1024 ** 5, '2P'],
  ])('%d -> %s, which parseSize reads back', (n, s) => {
    expect(formatSizeExact(n)).toBe(s);
    expect(parseSize(s)).toBe(n);
  });
});
