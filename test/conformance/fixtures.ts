/** Devices the conformance tests build on: patterned content, in memory or in a file. */
import fs from 'node:fs';
import path from 'node:path';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';

export const SIZE = 16 * 1024 * 1024;

/** The standard test content (data at the start, middle, an unaligned spot and the tail; holes elsewhere). */
export function patternedContent(size = SIZE): Buffer {
  const dir = tempDir();
  try {
    return makeImage(path.join(dir, 'x.img'), standardLayout(size));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A memory device holding `content`; its zero regions stay holes. */
export async function memoryWith(content: Buffer): Promise<MemoryDevice> {
  const dev = new MemoryDevice(content.length);
  const step = 1024 * 1024;
  for (let off = 0; off < content.length; off += step) {
    const slice = content.subarray(off, Math.min(off + step, content.length));
    if (slice.some((b) => b !== 0)) await dev.write(slice, off);
  }
  return dev;
}

/** A temp directory with a raw image file holding the standard content. */
export function imageFile(size = SIZE): { dir: string; file: string; expected: Buffer; cleanup: () => void } {
  const dir = tempDir();
  const file = path.join(dir, 'disk.img');
  const expected = makeImage(file, standardLayout(size));
  return { dir, file, expected, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
