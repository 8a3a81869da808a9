import { describe, expect, it } from 'vitest';
import { allocShortLived, SLAB_MAX_BUFFER } from '../../../src/util/slab-buffers.js';

describe('allocShortLived', () => {
  it('hands out buffers of the asked length that never overlap, across slabs', () => {
    const bufs: Buffer[] = [];
    for (let i = 0; i < 400; i++) {
      const b = allocShortLived(4096 + (i % 3) * 512 + 1);
      expect(b.length).toBe(4096 + (i % 3) * 512 + 1);
      b.fill(i & 0xff);
      bufs.push(b);
    }
    // Each buffer still holds its own fill: none was cut from bytes another one uses.
    bufs.forEach((b, i) => expect(b.every((x) => x === (i & 0xff))).toBe(true));
  });

  it('gives large buffers their own allocation', () => {
    const b = allocShortLived(SLAB_MAX_BUFFER + 1);
    expect(b.length).toBe(SLAB_MAX_BUFFER + 1);
    expect(b.buffer.byteLength).toBe(SLAB_MAX_BUFFER + 1);
  });
});
