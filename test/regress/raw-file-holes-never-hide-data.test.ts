/**
 * DiskFile.extents (SEEK_DATA/SEEK_HOLE) never reports data as a hole: for random sparse layouts
 * (a bounded number of seeded writes), every written byte lies in a data extent, every hole reads
 * as zeroes, the extents cover the asked range exactly, and asking with a small extent budget
 * and continuing where the answer ended gives the same layout.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DiskFile } from '../../src/blockdev/base/disk-file.js';
import type { Extent } from '../../src/blockdev/types.js';
import { seeker, seekerError } from '../../src/native/seek.js';
import { tempDir } from '../helpers/images.js';

const dir = tempDir('rebound-holes-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

async function allExtents(f: DiskFile, offset: number, length: number, max: number): Promise<Extent[]> {
  const out: Extent[] = [];
  let pos = offset;
  while (pos < offset + length) {
    const got = f.extents(pos, offset + length - pos, max);
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThanOrEqual(max);
    for (const e of got) {
      expect(e.offset).toBe(pos);
      expect(e.length).toBeGreaterThan(0);
      const last = out[out.length - 1];
      if (last && last.hole === e.hole) last.length += e.length;
      else out.push({ ...e });
      pos += e.length;
    }
  }
  expect(pos).toBe(offset + length);
  return out;
}

describe('raw file extents from SEEK_DATA/SEEK_HOLE', () => {
  it('the native addon is built', () => {
    expect(seeker(), `tools/build-native.sh: ${seekerError()}`).toBeDefined();
  });

  it.each([1, 2, 3, 4, 5, 6])('seed %i: data is never reported as a hole', async (seed) => {
    const r = rng(seed);
    const size = 256 * 1024 * 1024 + Math.floor(r() * 4096);
    const file = path.join(dir, `s${seed}.raw`);
    const fd = fs.openSync(file, 'w');
    fs.ftruncateSync(fd, size);
    const writes: Array<[number, number]> = [];
    for (let i = 0; i < 12; i++) {
      const len = 1 + Math.floor(r() * 200_000);
      const off = Math.floor(r() * (size - len));
      fs.writeSync(fd, Buffer.alloc(len, 0xa5), 0, len, off);
      writes.push([off, len]);
    }
    fs.closeSync(fd);
    const f = await DiskFile.open(file, { write: false });
    try {
      expect(f.canSeekHoles).toBe(true);
      const whole = await allExtents(f, 0, size, 1024);
      expect(whole.some((e) => e.hole)).toBe(true);
      for (const [off, len] of writes) {
        const inside = whole.filter((e) => e.offset < off + len && e.offset + e.length > off);
        expect(inside.every((e) => !e.hole && !e.zero), `write ${off}+${len}`).toBe(true);
      }
      for (const e of whole.filter((x) => x.hole)) {
        expect(e.zero).toBe(true);
        const buf = Buffer.alloc(Math.min(e.length, 4 * 1024 * 1024));
        await f.read(buf, e.offset);
        expect(buf.equals(Buffer.alloc(buf.length)), `hole at ${e.offset}`).toBe(true);
        await f.read(buf.subarray(0, Math.min(buf.length, e.length)), e.offset + e.length - Math.min(buf.length, e.length));
        expect(buf.equals(Buffer.alloc(buf.length)), `end of hole at ${e.offset}`).toBe(true);
      }
      // One extent at a time, from unaligned starting points: the same layout.
      expect(await allExtents(f, 0, size, 1)).toEqual(whole);
      const from = writes[0]![0] + 1;
      const part = await allExtents(f, from, size - from, 2);
      expect(part[0]!.hole).toBe(false);
    } finally {
      await f.close();
    }
  });
});
