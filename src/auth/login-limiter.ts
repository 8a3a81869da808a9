/**
 * LoginLimiter: failed API logins (a bearer token that is no token of the store) are counted per
 * client address in a fixed window that starts at the first failure. Once an address has `limit`
 * failures in its window, its further bad tokens get 429 with Retry-After until the window ends
 * (api/auth.ts; valid tokens still pass). Requests without any token are not failures (nothing is
 * being guessed). The table is bounded: at `maxAddresses` the windows that ended are dropped,
 * then the oldest.
 *
 * LogThrottle: the log lines of failures are limited too (`perWindow` lines a window, then one
 * line saying how many were left out), so an attacker cannot fill the log.
 *
 * Both take a clock, so tests count requests instead of waiting.
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

export class LogThrottle {
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  #start = -Infinity;
  #lines = 0;
  #dropped = 0;

  constructor(opts: { perWindow?: number; windowMs?: number; now?: () => number } = {}) {
    this.#perWindow = opts.perWindow ?? 20;
    this.#windowMs = opts.windowMs ?? 60_000;
    this.#now = opts.now ?? Date.now;
  }

  /**
   * Whether to log this event; `last`: it is the window's last line (say that more are left
   * out); `dropped`: how many were left out in the previous window (said with the next line).
   */
  take(): { log: boolean; last: boolean; dropped: number } {
    const now = this.#now();
    let dropped = 0;
    if (now - this.#start >= this.#windowMs) {
      dropped = this.#dropped;
      this.#start = now;
      this.#lines = 0;
      this.#dropped = 0;
    }
    if (this.#lines < this.#perWindow) {
      this.#lines++;
      return { log: true, last: this.#lines === this.#perWindow, dropped };
    }
    this.#dropped++;
    return { log: false, last: false, dropped };
  }
}
