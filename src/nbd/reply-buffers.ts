/**
 * ReplyBufferPool: reuses the buffers READ replies are built in (header + data in one buffer).
 * Allocating a fresh 256 KiB or 1 MiB buffer per reply kept V8's garbage collector busy for ~20 %
 * of a sequential copy (tools/bench/nbd-read). A buffer goes back to the pool only from the
 * socket's write callback, when the kernel has taken its bytes. Buffers are pooled by exact size
 * (clients repeat their request sizes) up to a total byte budget; anything else is left to the GC.
 * Only sizes asked for more than once are pooled: a client whose every READ has another length
 * (a fuzzer, a hostile client) would otherwise fill the pool with buffers nobody reuses, and the
 * daemon would keep up to the whole budget in memory for nothing.
 */
const MIN_POOLED = 4096;
/** Sizes whose requests are counted (the count restarts when more sizes than this were seen). */
const MAX_COUNTED_SIZES = 1024;

export class ReplyBufferPool {
  readonly #free = new Map<number, Buffer[]>();
  /** How often each size was asked for (sizes asked for once are not pooled). */
  readonly #asked = new Map<number, number>();
  readonly #maxBytes: number;
  #pooledBytes = 0;

  constructor(maxBytes = 64 * 1024 * 1024) {
    this.#maxBytes = maxBytes;
  }

  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  acquire(size: number): Buffer {
    if (size >= MIN_POOLED) {
      if (this.#asked.size >= MAX_COUNTED_SIZES && !this.#asked.has(size)) this.#asked.clear();
      this.#asked.set(size, (this.#asked.get(size) ?? 0) + 1);
    }
    const list = this.#free.get(size);
    const buf = list?.pop();
    if (buf) {
      this.#pooledBytes -= size;
      return buf;
    }
    return Buffer.allocUnsafe(size);
  }

  release(buf: Buffer): void {
    const size = buf.length;
    if (size < MIN_POOLED || buf.byteOffset !== 0 || this.#pooledBytes + size > this.#maxBytes) return;
    if ((this.#asked.get(size) ?? 0) < 2) return;
    let list = this.#free.get(size);
    if (!list) {
      list = [];
      this.#free.set(size, list);
    }
    list.push(buf);
    this.#pooledBytes += size;
  }
}
