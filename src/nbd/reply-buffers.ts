/**
 * ReplyBufferPool: reuses the buffers READ replies are built in (header + data in one buffer).
 * Allocating a fresh 256 KiB or 1 MiB buffer per reply kept V8's garbage collector busy for ~20 %
 * of a sequential copy (tools/bench/nbd-read). A buffer goes back to the pool only from the
 * socket's write callback, when the kernel has taken its bytes. Buffers are pooled by exact size
 * (clients repeat their request sizes) up to a total byte budget; anything else is left to the GC.
 */
const MIN_POOLED = 4096;

export class ReplyBufferPool {
  readonly #free = new Map<number, Buffer[]>();
  readonly #maxBytes: number;
  #pooledBytes = 0;

  constructor(maxBytes = 64 * 1024 * 1024) {
    this.#maxBytes = maxBytes;
  }

  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  acquire(size: number): Buffer {
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
    let list = this.#free.get(size);
    if (!list) {
      list = [];
      this.#free.set(size, list);
    }
    list.push(buf);
    this.#pooledBytes += size;
  }
}
