/**
 * RangeLock: async exclusive locks over integer ranges [start, end). A request waits while its
 * range overlaps a held range or an earlier waiting request (FIFO among overlapping requests, so
 * none starves); requests on disjoint ranges run concurrently. Cost is O(held + waiting) per call,
 * which is small at the queue depths block devices see (tens of requests).
 */
interface Entry {
  start: number;
  end: number;
  grant: () => void;
  granted: boolean;
}

export class RangeLock {
  #entries: Entry[] = []; // held and waiting, in arrival order
  #waiting = 0;

  /** Number of held and waiting requests. */
  get size(): number {
    return this.#entries.length;
  }

  async run<T>(start: number, end: number, fn: () => Promise<T>): Promise<T> {
    const entry: Entry = { start, end, grant: () => undefined, granted: false };
    // Fast path (the common case): nothing held or waiting overlaps, so no waiting at all.
    const free = this.#entries.every((o) => o.end <= start || end <= o.start);
    this.#entries.push(entry);
    if (free) {
      entry.granted = true;
    } else {
      this.#waiting++;
      await new Promise<void>((resolve) => (entry.grant = resolve));
    }
    try {
      return await fn();
    } finally {
      this.#entries.splice(this.#entries.indexOf(entry), 1);
      if (this.#waiting > 0) this.#schedule();
    }
  }

  #schedule(): void {
    for (let i = 0; i < this.#entries.length; i++) {
      const e = this.#entries[i]!;
      if (e.granted) continue;
      let blocked = false;
      for (let j = 0; j < i; j++) {
        const o = this.#entries[j]!;
        if (o.start < e.end && e.start < o.end) {
          blocked = true;
          break;
        }
      }
      if (!blocked) {
        e.granted = true;
        this.#waiting--;
        e.grant();
      }
    }
  }
}
