/**
 * A pool of large reply buffers (READ data). A 64 KiB or 1 MiB READ reply is allocated, filled by
 * the device and written to the socket; recycling the buffers once the kernel has the bytes keeps
 * the garbage collector and malloc out of the read path. Capacities are the length rounded up to
 * 4 KiB (a READ reply is the data plus ~100 bytes of header, so 1 MiB reads use 1 MiB + 4 KiB
 * buffers, not 2 MiB); at most MAX_IDLE_BYTES wait in the pool. Requests under MIN_POOLED are
 * plain allocations (Node's own slab pool serves them).
 */
const MIN_POOLED = 16 * 1024;
const MAX_POOLED = 8 * 1024 * 1024;
const GRANULE = 4096;
const MAX_IDLE_BYTES = 64 * 1024 * 1024;

export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  #idleBytes = 0;

  /** A buffer of exactly `length` bytes (a view of a pooled buffer when large enough). */
  acquire(length: number): Buffer {
    if (length < MIN_POOLED || length > MAX_POOLED) return Buffer.allocUnsafe(length);
    const cap = Math.ceil(length / GRANULE) * GRANULE;
    const b = this.#free.get(cap)?.pop();
    if (b) this.#idleBytes -= cap;
    return (b ?? Buffer.allocUnsafeSlow(cap)).subarray(0, length);
  }

  /** Gives a buffer from acquire() back; it must not be used afterwards. */
  release(view: Buffer): void {
    const cap = view.buffer.byteLength;
    if (view.byteOffset !== 0 || cap < MIN_POOLED || cap > MAX_POOLED || cap % GRANULE !== 0) return;
    if (this.#idleBytes + cap > MAX_IDLE_BYTES) return;
    let list = this.#free.get(cap);
    if (!list) this.#free.set(cap, (list = []));
    list.push(Buffer.from(view.buffer, 0, cap));
    this.#idleBytes += cap;
  }

  get idleBytes(): number {
    return this.#idleBytes;
  }
}
