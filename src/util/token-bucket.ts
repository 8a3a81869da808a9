/**
 * TokenBucket: a rate limiter with debt. `take(n)` subtracts n tokens at once (the balance may go
 * negative) and waits until the balance is back to zero, so callers are served in arrival order,
 * a request larger than the burst still passes (it just waits longer), and the long-run rate is
 * exactly `rate` tokens per second. The burst is `rate x burstSeconds` tokens.
 *
 * The rate can change while waiters are queued (live QoS changes); 0 or undefined means unlimited.
 */
export class TokenBucket {
  #rate: number;
  #burst: number;
  readonly #burstSeconds: number;
  #tokens: number;
  #last = performance.now();

  constructor(rate: number, burstSeconds = 0.1) {
    this.#burstSeconds = burstSeconds;
    this.#rate = rate;
    this.#burst = rate * burstSeconds;
    this.#tokens = this.#burst;
  }

  get rate(): number {
    return this.#rate;
  }

  setRate(rate: number): void {
    this.#refill();
    this.#rate = rate;
    this.#burst = rate * this.#burstSeconds;
    this.#tokens = Math.min(this.#tokens, this.#burst);
  }

  /** Resolves when the n tokens are paid for. Free when the rate is 0 (unlimited). */
  take(n: number, signal?: AbortSignal): Promise<void> {
    if (!(this.#rate > 0)) return Promise.resolve();
    // An 'abort' that already fired never fires again: listening for it would not cancel the wait.
    if (signal?.aborted) return Promise.reject(signal.reason);
    this.#refill();
    this.#tokens -= n;
    if (this.#tokens >= 0) return Promise.resolve();
    const waitMs = (-this.#tokens / this.#rate) * 1000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, waitMs);
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  #refill(): void {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
    this.#last = now;
  }
}
