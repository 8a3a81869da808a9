/**
 * BufferPool: large short-lived buffers (READ replies of NFS and iSCSI) handed back for reuse once
 * their owner is done with them (the kernel has the bytes).
 *
 * A fresh 1 MiB buffer is an mmap'd allocation whose pages the kernel faults in and zeroes on first
 * touch, and an ArrayBuffer the GC has to account and sweep; recycling keeps both out of the read
 * path. Reused buffers come back as they are (contents uninitialised, like Buffer.allocUnsafe).
 *
 * Design notes:
 *  - `acquire(n)` gives a view of exactly n bytes; the buffer under it has n rounded up to 4 KiB
 *    (a READ reply is the data plus ~100 bytes of header, so a 1 MiB NFS read uses 1 MiB + 4 KiB,
 *    not 2 MiB). Lengths under MIN_POOLED (Node's own slab pool serves them) or over MAX_POOLED
 *    are plain allocations.
 *  - At most `maxIdleBytes` wait in the pool.
 *  - `release` takes back only buffers this pool handed out and not yet taken back (a WeakSet of
 *    their memory), so a buffer released twice, or one that came from elsewhere (an iSCSI answer
 *    other than a READ's), is ignored rather than handed to two owners. A buffer never released is
 *    simply garbage-collected.
 */
export const MIN_POOLED = 16 * 1024;
export const MAX_POOLED = 8 * 1024 * 1024;
const GRANULE = 4096;

export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  readonly #out = new WeakSet<ArrayBufferLike>();
  readonly #maxIdleBytes: number;
  #idleBytes = 0;

  constructor(opts: { maxIdleBytes?: number } = {}) {
    this.#maxIdleBytes = opts.maxIdleBytes ?? 64 * 1024 * 1024;
  }

  /** Bytes waiting for reuse. */
  get idleBytes(): number {
    return this.#idleBytes;
  }

  /** A buffer of exactly `length` bytes (a view of a pooled buffer when large enough). */
  acquire(length: number): Buffer {
    if (length < MIN_POOLED || length > MAX_POOLED) return Buffer.allocUnsafe(length);
    const cap = Math.ceil(length / GRANULE) * GRANULE;
    const b = this.#free.get(cap)?.pop();
    if (b) this.#idleBytes -= cap;
    const out = b ?? Buffer.allocUnsafeSlow(cap);
    this.#out.add(out.buffer);
    return out.subarray(0, length);
  }

  /** Gives a buffer from acquire() back; the caller must not touch it afterwards. */
  release(view: Buffer): void {
    if (view.byteOffset !== 0 || !this.#out.delete(view.buffer)) return;
    const cap = view.buffer.byteLength;
    if (this.#idleBytes + cap > this.#maxIdleBytes) return;
    let list = this.#free.get(cap);
    if (!list) this.#free.set(cap, (list = []));
    list.push(Buffer.from(view.buffer, 0, cap));
    this.#idleBytes += cap;
  }
}
