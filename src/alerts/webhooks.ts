/**
 * Webhook delivery of alerts: a JSON POST per alert and URL, retried with exponential backoff.
 *
 * Design notes:
 *  - One queue and one worker per URL, so a dead receiver delays only its own alerts and each
 *    receiver gets its alerts in order. A queue is bounded (`maxQueue`): when full, the oldest
 *    alert is dropped and counted (a receiver down for days must not grow the daemon).
 *  - An alert is retried until a 2xx answer or `maxAttempts`, waiting base * 2^n (capped) between
 *    attempts; then dropped and logged. A receiver that answered 2xx never gets that alert again.
 *  - Waiting goes through `wait(ms)`, injectable: tests release retries themselves and never wait
 *    on the clock.
 */
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { ReboundError, errorText } from '../errors.js';

export interface AlertMessage {
  /** Stable identity of the condition (e.g. `session-age:web-1-2026...`): firing and resolved share it. */
  key: string;
  kind: AlertKind;
  state: 'firing' | 'resolved';
  severity: 'warning' | 'critical';
  summary: string;
  details: Record<string, unknown>;
  /** When the condition started (ISO 8601). */
  startsAt: string;
  /** When it cleared (resolved only). */
  endsAt?: string;
  /** The daemon's host name. */
  host: string;
}

export const ALERT_KINDS = [
  'session-age',
  'session-size',
  'quota',
  'migration-paused',
  'migration-stalled',
  'verify-bad-chunks',
  'verify-boot-failed',
  'job-failed',
  'repo-disk-full',
] as const;
export type AlertKind = (typeof ALERT_KINDS)[number];

export type PostFn = (url: string, body: string, signal: AbortSignal) => Promise<number>;

export interface WebhookOptions {
  urls: readonly string[];
  /** Alerts waiting per URL before the oldest is dropped (default 256). */
  maxQueue?: number;
  /** Attempts per alert and URL (default 10). */
  maxAttempts?: number;
  /** First retry delay, ms (default 1 s; doubles, capped at maxDelayMs, default 5 min). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Per attempt, ms (default 10 s). */
  timeoutMs?: number;
  wait?: (ms: number) => Promise<void>;
  post?: PostFn;
  log?: Logger;
}

const fetchPost: PostFn = async (url, body, signal) => {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'user-agent': 'rebound-alerts' }, body, signal });
  await r.body?.cancel().catch(() => undefined);
  return r.status;
};

/** Checks webhook URLs (config `alertWebhooks`): http or https only. */
export function validateWebhookUrl(url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `alert webhook '${url}' is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ReboundError('ERR_INVALID_ARGUMENT', `alert webhook '${url}' must be http:// or https://`);
}

interface Target {
  url: string;
  queue: AlertMessage[];
  running: boolean;
}

export class WebhookSender {
  readonly #targets: Target[];
  readonly #o: Required<Omit<WebhookOptions, 'urls' | 'log'>>;
  readonly #log: Logger;
  readonly #closed = new AbortController();
  readonly #idleWaiters: Array<() => void> = [];
  /** Counters, for tests and logs. */
  readonly stats = { delivered: 0, failedAttempts: 0, dropped: 0 };

  constructor(opts: WebhookOptions) {
    for (const u of opts.urls) validateWebhookUrl(u);
    this.#targets = opts.urls.map((url) => ({ url, queue: [], running: false }));
    this.#log = opts.log ?? silentLogger;
    this.#o = {
      maxQueue: opts.maxQueue ?? 256,
      maxAttempts: opts.maxAttempts ?? 10,
      baseDelayMs: opts.baseDelayMs ?? 1000,
      maxDelayMs: opts.maxDelayMs ?? 300_000,
      timeoutMs: opts.timeoutMs ?? 10_000,
      wait: opts.wait ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms).unref())),
      post: opts.post ?? fetchPost,
    };
  }

  get urls(): string[] {
    return this.#targets.map((t) => t.url);
  }

  send(msg: AlertMessage): void {
    if (this.#closed.signal.aborted) return;
    for (const t of this.#targets) {
      if (t.queue.length >= this.#o.maxQueue) {
        // The oldest waiting one: the head is being delivered while the worker runs.
        const [old] = t.queue.splice(t.running && t.queue.length > 1 ? 1 : 0, 1) as [AlertMessage];
        this.stats.dropped++;
        this.#log.warn('alert queue full: oldest waiting alert dropped', { webhook: t.url, key: old.key, state: old.state });
      }
      t.queue.push(msg);
      if (!t.running) void this.#run(t);
    }
  }

  /** Resolves once every queue is empty (delivered or dropped). */
  idle(): Promise<void> {
    if (this.#targets.every((t) => !t.running)) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  close(): void {
    this.#closed.abort();
    for (const t of this.#targets) t.queue.length = 0;
  }

  async #run(t: Target): Promise<void> {
    t.running = true;
    try {
      while (t.queue.length > 0 && !this.#closed.signal.aborted) {
        const msg = t.queue[0]!;
        await this.#deliver(t.url, msg);
        if (t.queue[0] === msg) t.queue.shift(); // unless dropped for room meanwhile
      }
    } finally {
      t.running = false;
      if (this.#targets.every((x) => !x.running)) for (const w of this.#idleWaiters.splice(0)) w();
    }
  }

  async #deliver(url: string, msg: AlertMessage): Promise<void> {
    const body = JSON.stringify(msg);
    for (let attempt = 1; ; attempt++) {
      let why: string;
      try {
        const status = await this.#o.post(url, body, AbortSignal.any([this.#closed.signal, AbortSignal.timeout(this.#o.timeoutMs)]));
        if (status >= 200 && status < 300) {
          this.stats.delivered++;
          return;
        }
        why = `HTTP ${status}`;
      } catch (err) {
        why = errorText(err);
      }
      this.stats.failedAttempts++;
      if (this.#closed.signal.aborted) return;
      if (attempt >= this.#o.maxAttempts) {
        this.stats.dropped++;
        this.#log.warn('alert webhook failed; alert dropped', { webhook: url, key: msg.key, state: msg.state, attempts: attempt, err: why });
        return;
      }
      const delay = Math.min(this.#o.maxDelayMs, this.#o.baseDelayMs * 2 ** (attempt - 1));
      if (attempt === 1) this.#log.warn('alert webhook failed; retrying with backoff', { webhook: url, key: msg.key, err: why });
      await this.#o.wait(delay);
    }
  }
}
