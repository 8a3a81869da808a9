/**
 * Small short-lived buffers cut from shared slabs: one allocation per slab instead of one malloc
 * (and one ArrayBuffer for the GC to track and sweep) per buffer. Node's own pool serves only
 * buffers under 4 KiB, so every 4 KiB READ answer cost a malloc of its own.
 *
 * A slab is freed when the last buffer cut from it is, so only buffers that die young (a reply on
 * its way to the socket) may come from here: one kept for long would hold its whole slab.
 * Contents are uninitialised, like Buffer.allocUnsafe.
 */
const SLAB_BYTES = 256 * 1024;
/** Larger buffers get their own allocation (a slab would hold few of them). */
export const SLAB_MAX_BUFFER = 16 * 1024;

let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let used = 0;

export function allocShortLived(n: number): Buffer {
  if (n > SLAB_MAX_BUFFER) return Buffer.allocUnsafe(n);
  if (used + n > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    used = 0;
  }
  const b = slab.subarray(used, used + n);
  used += (n + 7) & ~7; // 8-byte aligned, as Node's pool does
  return b;
}
