/**
 * Async locks. Node is single-threaded, but an `await` in the middle of a read-modify-write lets
 * another request interleave; these locks serialise such sections.
 */

/** A FIFO mutex. `run(fn)` holds the lock while `fn` runs. */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();
  #held = 0;

  get locked(): boolean {
    return this.#held > 0;
  }

  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => (release = resolve));
    this.#held++;
    try {
      await previous;
      return await fn();
    } finally {
      this.#held--;
      release();
    }
  }
}

/**
 * One FIFO lock per key (e.g. per block number), created on demand and dropped when idle, so the
 * map holds only keys that are locked or waited for.
 */
export class KeyedMutex<K> {
  readonly #tails = new Map<K, { tail: Promise<void>; users: number }>();

  get size(): number {
    return this.#tails.size;
  }

  async run<T>(key: K, fn: () => Promise<T> | T): Promise<T> {
    let entry = this.#tails.get(key);
    if (!entry) {
      entry = { tail: Promise.resolve(), users: 0 };
      this.#tails.set(key, entry);
    }
    const previous = entry.tail;
    let release!: () => void;
    entry.tail = new Promise<void>((resolve) => (release = resolve));
    entry.users++;
    try {
      await previous;
      return await fn();
    } finally {
      release();
      if (--entry.users === 0) this.#tails.delete(key);
    }
  }
}
