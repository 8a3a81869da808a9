/** Deterministic test images: data regions with a known pattern, zero regions and holes. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export function tempDir(prefix = 'rebound-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** The byte at `offset` of a patterned region: varies with position so misplaced data shows. */
export function patternByte(offset: number, seed = 1): number {
  return (Math.imul(Math.floor(offset / 8) + seed, 2654435761) >>> 24) ^ (offset & 0xff);
}

export function patternBuffer(offset: number, length: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = patternByte(offset + i, seed);
  return b;
}

export interface ImageLayout {
  size: number;
  /** [offset, length] ranges that hold pattern data; everything else is a sparse hole. */
  data: Array<[number, number]>;
  seed?: number;
}

/** Writes a sparse raw image: holes everywhere except `data` ranges, which hold the pattern. */
export function makeImage(file: string, layout: ImageLayout): Buffer {
  const fd = fs.openSync(file, 'w');
  const expected = Buffer.alloc(layout.size);
  try {
    fs.ftruncateSync(fd, layout.size);
    for (const [off, len] of layout.data) {
      const buf = patternBuffer(off, len, layout.seed);
      fs.writeSync(fd, buf, 0, len, off);
      buf.copy(expected, off);
    }
  } finally {
    fs.closeSync(fd);
  }
  return expected;
}

/** A layout used by several tests: data at the start, middle, an odd unaligned spot, and the tail. */
export function standardLayout(size = 16 * 1024 * 1024): ImageLayout {
  return {
    size,
    data: [
      [0, 1024 * 1024],
      [4 * 1024 * 1024 + 12345, 300_000],
      [8 * 1024 * 1024, 2 * 1024 * 1024],
      [size - 65536, 65536],
    ],
  };
}
