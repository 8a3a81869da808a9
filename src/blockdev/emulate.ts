/**
 * Emulations of the write path, in one place (like the emulation nbdkit's server/backend.c does
 * for plugins that lack a feature):
 *  - WRITE_ZEROES by writing zeroes, in pieces, when a device cannot zero cheaply;
 *  - FUA by a flush after the call, when a device's storage has no per-write "stable" flag;
 *  - `zeroRange`: zero a range of any writable device, with WRITE_ZEROES where it has it.
 *
 * Emulations are never fast: a caller asking for a fast zero gets ENOTSUP (the client's
 * documented fallback) instead.
 */
import { BlockError } from '../errors.js';
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from './types.js';

/** Zeroes are written in pieces of this size (one buffer, reused). */
export const ZERO_PIECE = 4 * 1024 * 1024;

/** Writes `length` zero bytes at `offset` through `write` (a device's write, or a layer's own). */
export async function writeZeroes(write: (src: Uint8Array, offset: number) => Promise<void>, offset: number, length: number): Promise<void> {
  const piece = new Uint8Array(Math.min(ZERO_PIECE, length));
  for (let pos = offset; pos < offset + length; pos += piece.length) {
    await write(piece.subarray(0, Math.min(piece.length, offset + length - pos)), pos);
  }
}

/** Runs a write-path call, then flushes if it carried FUA: the call resolves once its data is stable. */
export async function withFuaByFlush(opts: WriteOptions | undefined, flush: () => Promise<void>, op: () => Promise<void>): Promise<void> {
  await op();
  if (opts?.fua) await flush();
}

/**
 * `zero()` of a device whose zeroing is emulated: written zeroes (never a hole, so NO_HOLE holds
 * trivially), FUA by flush, and ENOTSUP for a fast zero because writing is not fast.
 */
export function zeroByWriting(dev: Pick<BlockDevice, 'write' | 'flush'>, offset: number, length: number, opts?: ZeroOptions): Promise<void> {
  if (opts?.fast) return Promise.reject(new BlockError('ENOTSUP', 'fast zero is not supported: zeroing writes data'));
  return withFuaByFlush(opts, () => dev.flush(), () => writeZeroes((src, pos) => dev.write(src, pos), offset, length));
}

/**
 * Makes a range of a writable device read as zeroes: WRITE_ZEROES where the device has it (a
 * device may still refuse with ENOTSUP), else written zeroes. For copiers (restore, migration).
 */
export async function zeroRange(dev: BlockDevice, offset: number, length: number): Promise<void> {
  if (dev.capabilities().canZero) {
    try {
      return await dev.zero(offset, length);
    } catch (err) {
      if (!(err instanceof BlockError && err.code === 'ENOTSUP')) throw err;
    }
  }
  await writeZeroes((src, pos) => dev.write(src, pos), offset, length);
}

/** The extents answer of a device that cannot tell holes from data: all data (always correct). */
export function allData(offset: number, length: number): Extent[] {
  return [{ offset, length, hole: false, zero: false }];
}
