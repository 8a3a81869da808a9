/**
 * ByteBudget: a counted budget of bytes shared by many holders (the daemon's total of request
 * payloads in flight over NBD and NFS).
 *
 * Design notes:
 *  - acquire(n, signal) resolves once n bytes are reserved; release(n) gives them back. Waiters
 *    are served strictly in arrival order (FIFO): a large request is not starved by a stream of
 *    small ones, and a small one waits behind an earlier large one.
 *  - An acquisition larger than the total is clamped to the total, so it can still run alone;
 *    acquire() resolves with the amount actually reserved and the caller releases that amount.
 *  - A waiting acquisition whose signal aborts is removed from the queue and rejects with the
 *    signal's reason (a vanished client's queued work holds nothing). An acquisition already
 *    granted is the caller's to release.
 *  - tryAcquire() takes bytes only if no one is waiting and they fit now (no queue jumping).
 */
export class ByteBudget {
  readonly total: number;
  #used = 0;
  readonly #waiters: Array<{ n: number; resolve: (n: number) => void; reject: (err: unknown) => void; cleanup: () => void }> = [];

  constructor(total: number) {
    if (!Number.isSafeInteger(total) || total <= 0) throw new RangeError(`byte budget must be a positive integer, got ${total}`);
    this.total = total;
  }

  /** Bytes reserved now. */
  get used(): number {
    return this.#used;
  }

  /** Acquisitions waiting. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Reserves min(n, total) bytes; resolves with that amount. */
  acquire(n: number, signal?: AbortSignal): Promise<number> {
    const want = this.#clamp(n);
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#waiters.length === 0 && this.#used + want <= this.total) {
      this.#used += want;
      return Promise.resolve(want);
    }
    return new Promise<number>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(entry);
        if (i < 0) return;
        this.#waiters.splice(i, 1);
        reject(signal!.reason);
        // The head may have been blocking smaller waiters behind it.
        this.#grant();
      };
      const entry = { n: want, resolve, reject, cleanup: () => signal?.removeEventListener('abort', onAbort) };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(entry);
    });
  }

  /** Reserves min(n, total) bytes if that is possible at once without jumping the queue; else 0. */
  tryAcquire(n: number): number {
    const want = this.#clamp(n);
    if (this.#waiters.length > 0 || this.#used + want > this.total) return 0;
    this.#used += want;
    return want;
  }

  /** Gives back bytes from acquire() / tryAcquire(). */
  release(n: number): void {
    if (n <= 0) return;
    this.#used = Math.max(0, this.#used - n);
    this.#grant();
  }

  #clamp(n: number): number {
    return Math.max(0, Math.min(Math.ceil(n), this.total));
  }

  #grant(): void {
    while (this.#waiters.length > 0) {
      const head = this.#waiters[0]!;
      if (this.#used + head.n > this.total) return;
      this.#waiters.shift();
      this.#used += head.n;
      head.cleanup();
      head.resolve(head.n);
    }
  }
}
