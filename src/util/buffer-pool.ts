/**
 * BufferPool: large buffers handed back for reuse once their owner is done with them.
 *
 * A fresh 1 MiB buffer is an mmap'd allocation whose pages the kernel faults in and zeroes on first
 * touch, and an ArrayBuffer the GC has to account and sweep; a sequential reader paid that for every
 * MiB it read. Buffers taken from a pool and given back are reused as they are (contents
 * uninitialised, like Buffer.allocUnsafe).
 *
 * Only power-of-two lengths in [MIN_POOLED, MAX_POOLED] are pooled (others are plain allocations),
 * at most `maxPerSize` buffers per length and `maxBytes` in all. `give` accepts only buffers this
 * pool handed out and not yet taken back (a WeakSet), so a buffer given twice, or one that came from
 * elsewhere, is ignored rather than handed to two owners. A buffer that is never given back is
 * simply garbage-collected.
 */
export const MIN_POOLED = 32 * 1024;
export const MAX_POOLED = 4 * 1024 * 1024;

export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  readonly #out = new WeakSet<Buffer>();
  readonly #maxPerSize: number;
  readonly #maxBytes: number;
  #freeBytes = 0;

  constructor(opts: { maxPerSize?: number; maxBytes?: number } = {}) {
    this.#maxPerSize = opts.maxPerSize ?? 8;
    this.#maxBytes = opts.maxBytes ?? 32 * 1024 * 1024;
  }

  /** Bytes held for reuse. */
  get freeBytes(): number {
    return this.#freeBytes;
  }

  take(n: number): Buffer {
    if (!pooled(n)) return Buffer.allocUnsafe(n);
    const b = this.#free.get(n)?.pop();
    if (b) this.#freeBytes -= n;
    const out = b ?? Buffer.allocUnsafeSlow(n);
    this.#out.add(out);
    return out;
  }

  /** Hands `b` back; the caller must not touch it afterwards. */
  give(b: Buffer): void {
    if (!this.#out.delete(b)) return;
    if (this.#freeBytes + b.length > this.#maxBytes) return;
    let list = this.#free.get(b.length);
    if (!list) this.#free.set(b.length, (list = []));
    if (list.length >= this.#maxPerSize) return;
    list.push(b);
    this.#freeBytes += b.length;
  }
}

function pooled(n: number): boolean {
  return n >= MIN_POOLED && n <= MAX_POOLED && (n & (n - 1)) === 0;
}
