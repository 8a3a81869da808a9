/**
 * ReplyBufferPool: reuses the buffers READ replies are built in (header + data in one buffer).
 * Allocating a fresh 256 KiB or 1 MiB buffer per reply kept V8's garbage collector busy for ~20 %
 * of a sequential copy (tools/bench/nbd-read). A buffer goes back to the pool only from the
 * socket's write callback, when the kernel has taken its bytes. Buffers are pooled by exact size
 * (clients repeat their request sizes) up to a total byte budget; anything else is left to the GC.
 * Only sizes asked for more than once are pooled: a client whose every READ has another length
 * (a fuzzer, a hostile client) would otherwise fill the pool with buffers nobody reuses, and the
 * daemon would keep up to the whole budget in memory for nothing.
 *
 * When the budget is full, a returned buffer of a size asked for recently makes room by dropping
 * buffers of the sizes asked for least recently. Without that, the first workload filled the pool
 * for good: after nbdcopy (256 KiB reads) had filled it, every 1 MiB read of the next client got a
 * fresh buffer, and V8 ran a major GC every few dozen of them for the external memory (fio 1 MiB
 * sequential reads: twice the server CPU per read, 0.6x nbdkit instead of 1.1x; the TLS record
 * layer's sealed batches, from the same pool, did the same to 4 KiB reads after a copy).
 */
const MIN_POOLED = 4096;
/** Sizes whose requests are counted (the count restarts when more sizes than this were seen). */
const MAX_COUNTED_SIZES = 1024;
/** Distinct sizes with free buffers (clients use a handful; this bounds the work of making room). */
const MAX_FREE_SIZES = 64;

export class ReplyBufferPool {
  readonly #free = new Map<number, Buffer[]>();
  /** Per size: how often it was asked for (sizes asked for once are not pooled), and when last. */
  readonly #asked = new Map<number, { count: number; last: number }>();
  readonly #maxBytes: number;
  #pooledBytes = 0;
  #clock = 0;

  constructor(maxBytes = 64 * 1024 * 1024) {
    this.#maxBytes = maxBytes;
  }

  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  acquire(size: number): Buffer {
    if (size >= MIN_POOLED) {
      if (this.#asked.size >= MAX_COUNTED_SIZES && !this.#asked.has(size)) this.#asked.clear();
      const asked = this.#asked.get(size);
      if (asked) {
        asked.count++;
        asked.last = ++this.#clock;
      } else this.#asked.set(size, { count: 1, last: ++this.#clock });
    }
    const buf = this.#free.get(size)?.pop();
    if (buf) {
      this.#pooledBytes -= size;
      return buf;
    }
    return Buffer.allocUnsafe(size);
  }

  release(buf: Buffer): void {
    const size = buf.length;
    if (size < MIN_POOLED || buf.byteOffset !== 0 || size > this.#maxBytes) return;
    const asked = this.#asked.get(size);
    if (!asked || asked.count < 2) return;
    if (this.#pooledBytes + size > this.#maxBytes && !this.#evictFor(size, asked.last)) return;
    let list = this.#free.get(size);
    if (!list) {
      if (this.#free.size >= MAX_FREE_SIZES) {
        for (const [other, l] of this.#free) if (l.length === 0) this.#free.delete(other);
        if (this.#free.size >= MAX_FREE_SIZES) return;
      }
      list = [];
      this.#free.set(size, list);
    }
    list.push(buf);
    this.#pooledBytes += size;
  }

  /**
   * Drops free buffers of sizes last asked for before `last` (the longest ago first) until `size`
   * fits; false, dropping nothing, if it cannot.
   */
  #evictFor(size: number, last: number): boolean {
    const older = [...this.#free]
      .map(([other, list]) => ({ other, list, last: this.#asked.get(other)?.last ?? 0 }))
      .filter((e) => e.other !== size && e.last < last);
    let room = this.#maxBytes - this.#pooledBytes;
    for (const e of older) room += e.other * e.list.length;
    if (room < size) return false;
    older.sort((a, b) => a.last - b.last);
    for (const { other, list } of older) {
      while (list.length > 0 && this.#pooledBytes + size > this.#maxBytes) {
        list.pop();
        this.#pooledBytes -= other;
      }
      if (list.length === 0) this.#free.delete(other);
      if (this.#pooledBytes + size <= this.#maxBytes) break;
    }
    return true;
  }
}
