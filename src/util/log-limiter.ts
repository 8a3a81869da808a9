/**
 * LogLimiter: rate-limits log lines per (kind, client) key, so a hostile client cannot fill the
 * disk or drown other lines by getting refused in a loop.
 *
 * Design notes:
 *  - Each key has a window of `intervalMs` starting at its first line. The first `burst` lines of a
 *    window are written; later ones are counted. The first line of the key after the window (or a
 *    sweep, or flush()) writes one "suppressed K similar messages" line for the counted ones, at
 *    the level and through the logger of the last suppressed line.
 *  - A sweep runs at most once per interval on any call and closes every expired window, so a
 *    flood that stops is still reported without a timer. Keys are bounded (`maxKeys`): when full,
 *    the oldest key is closed (its summary written) to make room. Memory is O(maxKeys).
 *  - Time comes from `now()` (injectable: tests drive a fake clock, never wall time).
 *  - Different kinds never share a budget: a flood of one refusal does not hide another kind.
 */
import type { Logger } from './log.js';

export type LimitedLevel = 'info' | 'warn' | 'error';

export interface LogLimiterOptions {
  /** Lines written per key and window (default 10). */
  burst?: number;
  /** Window length (default 60 s). */
  intervalMs?: number;
  /** Keys remembered at once (default 10,000). */
  maxKeys?: number;
  /** Milliseconds clock (default Date.now). */
  now?: () => number;
}

interface Window {
  start: number;
  written: number;
  suppressed: number;
  /** Where the summary goes: the logger and level of the last suppressed line. */
  log?: Logger;
  level?: LimitedLevel;
  kind: string;
  client: string;
}

export const DEFAULT_LOG_BURST = 10;
export const DEFAULT_LOG_INTERVAL_MS = 60_000;

export class LogLimiter {
  readonly #burst: number;
  readonly #interval: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();
  #lastSweep: number;

  constructor(opts: LogLimiterOptions = {}) {
    this.#burst = opts.burst ?? DEFAULT_LOG_BURST;
    this.#interval = opts.intervalMs ?? DEFAULT_LOG_INTERVAL_MS;
    this.#maxKeys = opts.maxKeys ?? 10_000;
    this.#now = opts.now ?? Date.now;
    this.#lastSweep = this.#now();
  }

  /** Keys with an open window (for tests and diagnostics). */
  get size(): number {
    return this.#windows.size;
  }

  warn(log: Logger, kind: string, client: string, msg: string, fields?: Record<string, unknown>): boolean {
    return this.write(log, 'warn', kind, client, msg, fields);
  }

  info(log: Logger, kind: string, client: string, msg: string, fields?: Record<string, unknown>): boolean {
    return this.write(log, 'info', kind, client, msg, fields);
  }

  /**
   * Writes `msg` at `level` unless the (kind, client) key is over its budget. `kind` names the
   * refusal (`nbd-connection-limit`), `client` the remote address. Returns whether it was written.
   */
  write(log: Logger, level: LimitedLevel, kind: string, client: string, msg: string, fields?: Record<string, unknown>): boolean {
    const now = this.#now();
    if (now - this.#lastSweep >= this.#interval) this.#sweep(now);
    const key = `${kind}\0${client}`;
    let w = this.#windows.get(key);
    if (w && now - w.start >= this.#interval) {
      this.#close(key, w);
      w = undefined;
    }
    if (!w) {
      if (this.#windows.size >= this.#maxKeys) {
        const [oldKey, oldest] = this.#windows.entries().next().value as [string, Window];
        this.#close(oldKey, oldest);
      }
      w = { start: now, written: 0, suppressed: 0, kind, client };
      this.#windows.set(key, w);
    }
    if (w.written < this.#burst) {
      w.written++;
      log[level](msg, fields);
      return true;
    }
    w.suppressed++;
    w.log = log;
    w.level = level;
    return false;
  }

  /** Writes the summaries of every window and forgets them (daemon stop). */
  flush(): void {
    for (const [key, w] of [...this.#windows]) this.#close(key, w);
  }

  #sweep(now: number): void {
    this.#lastSweep = now;
    for (const [key, w] of [...this.#windows]) if (now - w.start >= this.#interval) this.#close(key, w);
  }

  #close(key: string, w: Window): void {
    this.#windows.delete(key);
    if (w.suppressed > 0 && w.log && w.level) {
      w.log[w.level](`suppressed ${w.suppressed} similar message${w.suppressed === 1 ? '' : 's'}`, {
        kind: w.kind,
        client: w.client,
        suppressed: w.suppressed,
        seconds: Math.round((this.#now() - w.start) / 1000),
      });
    }
  }
}
