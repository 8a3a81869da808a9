/**
 * readAt(): reads any byte range of a published disk, whatever its alignment rules — for the file
 * front ends (FUSE, NFS), whose clients read at arbitrary offsets (a partition may start on any
 * 512-byte sector, a reader may seek anywhere);
 * a device whose minimum block size is larger than 1 (an overlay with 4 KiB blocks) gets the
 * enclosing aligned range read into a bounce buffer. Requests larger than the device's maximum
 * payload are split.
 */
import type { BlockDevice } from '../blockdev/types.js';

export async function readAt(dev: BlockDevice, dst: Uint8Array, offset: number): Promise<void> {
  const { min, max } = dev.capabilities().blockSize;
  // An unaligned piece grows by up to 2 x min in the bounce buffer; keep it within max.
  const step = min > 1 ? Math.max(min, max - 2 * min) : max;
  for (let done = 0; done < dst.length; ) {
    const len = Math.min(step, dst.length - done);
    await readPiece(dev, dst.subarray(done, done + len), offset + done, min);
    done += len;
  }
}

async function readPiece(dev: BlockDevice, dst: Uint8Array, offset: number, min: number): Promise<void> {
  const end = offset + dst.length;
  if (min <= 1 || (offset % min === 0 && (end % min === 0 || end === dev.size))) return dev.read(dst, offset);
  const start = offset - (offset % min);
  const alignedEnd = Math.min(dev.size, Math.ceil(end / min) * min);
  const bounce = new Uint8Array(alignedEnd - start);
  await dev.read(bounce, start);
  dst.set(bounce.subarray(offset - start, offset - start + dst.length));
}
