/**
 * MemoryTrim: gives memory that malloc holds free back to the kernel, every `intervalMs`
 * (malloc_trim through the native addon, src/native/memory.c).
 *
 * Why: Node allocates Buffers (READ replies, TLS records, WRITE payloads, chunk data) with glibc's
 * malloc, which keeps freed memory in its arenas for reuse. Once V8 has collected a burst's
 * Buffers, the memory is free but still resident: 4,000 Buffers of 16-80 KiB (160 MiB), half of them
 * dropped and collected, left the RSS at 204 MiB until malloc_trim brought it to 134 MiB
 * (test/unit/util/memory-trim.test.ts checks the same effect). That trim took 8-9 ms; one with
 * nothing to give back about 1 ms (measured on the 2-core development VM, busy with other work).
 * Every 10 s that is a short pause of the event loop, and the page faults of memory used again
 * afterwards; the fuzzed daemon's RSS figures with and without it are in tools/fuzz/README.md.
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
