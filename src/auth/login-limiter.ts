/**
 * LoginLimiter: failed API logins (a bearer token that is no token of the store) are counted per
 * client address in a fixed window that starts at the first failure. Once an address has `limit`
 * failures in its window, its further bad tokens get 429 with Retry-After until the window ends
 * (api/auth.ts; valid tokens still pass). Requests without any token are not failures (nothing is
 * being guessed). The table is bounded: at `maxAddresses` the windows that ended are dropped,
 * then the oldest.
 * The log lines of failures are limited per address by util/log-limiter.ts (api/auth.ts).
 *
 * It takes a clock, so tests count requests instead of waiting.
 */

export interface LoginLimiterOptions {
  /** Failures an address may have in one window. */
  limit?: number;
  windowMs?: number;
  maxAddresses?: number;
  now?: () => number;
}

export const LOGIN_FAILURE_LIMIT = 10;
export const LOGIN_WINDOW_MS = 60_000;

export class LoginLimiter {
  readonly limit: number;
  readonly windowMs: number;
  readonly #maxAddresses: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, { start: number; failures: number }>();

  constructor(opts: LoginLimiterOptions = {}) {
    this.limit = opts.limit ?? LOGIN_FAILURE_LIMIT;
    this.windowMs = opts.windowMs ?? LOGIN_WINDOW_MS;
    this.#maxAddresses = opts.maxAddresses ?? 10_000;
    this.#now = opts.now ?? Date.now;
  }

  /** Milliseconds until `address` may try again, or 0 when it may now. */
  blockedFor(address: string): number {
    const w = this.#windows.get(address);
    if (!w) return 0;
    const left = w.start + this.windowMs - this.#now();
    if (left <= 0) {
      this.#windows.delete(address);
      return 0;
    }
    return w.failures >= this.limit ? left : 0;
  }

  /** Counts a failure; returns the failures of the address in its current window. */
  fail(address: string): number {
    const now = this.#now();
    let w = this.#windows.get(address);
    if (!w || now - w.start >= this.windowMs) {
      if (w) this.#windows.delete(address);
      if (this.#windows.size >= this.#maxAddresses) this.#evict(now);
      w = { start: now, failures: 0 };
      this.#windows.set(address, w);
    }
    w.failures++;
    return w.failures;
  }

  get addresses(): number {
    return this.#windows.size;
  }

  #evict(now: number): void {
    for (const [a, w] of this.#windows) if (now - w.start >= this.windowMs) this.#windows.delete(a);
    // Still full: the oldest windows go (Map order is insertion order, i.e. window start).
    for (const a of this.#windows.keys()) {
      if (this.#windows.size < this.#maxAddresses) break;
      this.#windows.delete(a);
    }
  }
}
