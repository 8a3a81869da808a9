/**
 * MemoryTrim: gives memory that malloc holds free back to the kernel, every `intervalMs`
 * (malloc_trim through the native addon, src/native/memory.c).
 *
 * Why: Node allocates Buffers (READ replies, TLS records, WRITE payloads, chunk data) with glibc's
 * malloc, which keeps freed memory in its arenas for reuse, one arena per thread that allocated.
 * After bursts of odd sizes a long-lived daemon's resident size stays near its peak though the
 * memory is free: 10^6 fuzzed NBD inputs left a daemon 33 MiB above its size after the warm-up,
 * and malloc_trim gave back 34 MiB of the 198 it held in the middle of such a run (tools/fuzz/README.md).
 * A trim costs a walk over the arenas (about a millisecond for a few hundred MiB) and the page
 * faults of memory used again afterwards; every 10 s that is noise beside a busy daemon's work.
 *
 * Without the addon, or with intervalMs 0, nothing runs.
 */
import { addonFunctions } from '../native/addon.js';

interface MemoryFns {
  mallocTrim(): boolean;
}

export class MemoryTrim {
  readonly #timer: NodeJS.Timeout | undefined;

  constructor(intervalMs: number) {
    const fns = addonFunctions<MemoryFns>('mallocTrim');
    if (!fns || intervalMs <= 0) return;
    this.#timer = setInterval(() => fns.mallocTrim(), intervalMs);
    this.#timer.unref(); // never what keeps the process alive
  }

  /** Whether trims are scheduled (the addon is there and the interval is not 0). */
  get active(): boolean {
    return this.#timer !== undefined;
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
  }
}
