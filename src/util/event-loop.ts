/**
 * Event-loop delay: how late the loop runs a timer that should fire every `resolutionMs`. A
 * synchronous call on the loop (an fsync, a big JSON.stringify, a zstd call on the main thread)
 * shows up here as delay for every request the daemon is serving at that moment.
 *
 * Design notes:
 * - Sampling is node's own `perf_hooks.monitorEventLoopDelay` (libuv timers outside JS: at the
 *   default 10 ms the two samplers below cost ~200 timer callbacks a second, nothing per request).
 * - node records the time between two timer callbacks, i.e. resolution + delay; snapshots subtract
 *   the resolution so an idle loop reads ~0 ms, not ~10 ms.
 * - Two samplers: one never reset (since start) and one reset by `reset()` (an interval a caller
 *   measures). An ELDHistogram cannot be merged into another histogram, so one sampler could not
 *   serve both without losing the since-start view on every reset.
 * - A reset drops the sample in progress (node forgets the previous tick), so a stall that spans
 *   the reset is not counted in the new window. Windows are meant to be seconds long.
 * - What p99 means depends on the resolution: a stall delays one timer tick, whatever its length,
 *   so a stall once a second is ~1 % of the samples at 10 ms (on the edge of p99) and ~0.1 % at
 *   1 ms (only in max). Compare figures taken at the same resolution; `maxMs` shows single stalls.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

export const EVENT_LOOP_RESOLUTION_MS = 10;

/** Delay statistics over one window. All durations in milliseconds; 0 when `samples` is 0. */
export interface EventLoopDelaySnapshot {
  /** Start of the window (ISO 8601). */
  since: string;
  /** Length of the window in ms. */
  windowMs: number;
  /** Timer ticks observed in the window (~ windowMs / resolutionMs on an idle loop). */
  samples: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

export interface EventLoopDelayReport {
  resolutionMs: number;
  sinceStart: EventLoopDelaySnapshot;
  /** Since the last `reset()` (or since start when never reset). */
  sinceReset: EventLoopDelaySnapshot;
}

export interface EventLoopDelayMonitorOptions {
  /** Sampling interval in ms (integer >= 1). Default 10, node's default. */
  resolutionMs?: number;
}

interface Window {
  histogram: IntervalHistogram;
  startedAt: number; // Date.now()
  startedHr: number; // performance.now()
}

/**
 * Samples the event loop's delay from `start()` until `stop()`. `report()` reads both windows;
 * `reset()` (or `report({reset: true})`) starts a new "since reset" window. start() and stop() are idempotent; a stopped
 * monitor keeps answering with the figures it had.
 */
export class EventLoopDelayMonitor {
  readonly resolutionMs: number;
  #total: Window | undefined;
  #window: Window | undefined;
  #running = false;

  constructor(opts: EventLoopDelayMonitorOptions = {}) {
    const r = opts.resolutionMs ?? EVENT_LOOP_RESOLUTION_MS;
    if (!Number.isInteger(r) || r < 1) throw new RangeError(`event-loop resolution must be an integer >= 1 ms, got ${r}`);
    this.resolutionMs = r;
  }

  get running(): boolean {
    return this.#running;
  }

  start(): this {
    if (this.#running) return this;
    this.#total = this.#newWindow();
    this.#window = this.#newWindow();
    this.#running = true;
    return this;
  }

  stop(): void {
    if (!this.#running) return;
    this.#total?.histogram.disable();
    this.#window?.histogram.disable();
    this.#running = false;
  }

  /** Starts a new "since reset" window. */
  reset(): void {
    if (!this.#window) return;
    this.#window.histogram.reset();
    this.#window.startedAt = Date.now();
    this.#window.startedHr = performance.now();
  }

  /** Both windows; with `reset`, a new "since reset" window starts after the reading. */
  report(opts: { reset?: boolean } = {}): EventLoopDelayReport {
    const r = {
      resolutionMs: this.resolutionMs,
      sinceStart: this.#snapshot(this.#total),
      sinceReset: this.#snapshot(this.#window),
    };
    if (opts.reset) this.reset();
    return r;
  }

  #newWindow(): Window {
    const histogram = monitorEventLoopDelay({ resolution: this.resolutionMs });
    histogram.enable();
    return { histogram, startedAt: Date.now(), startedHr: performance.now() };
  }

  #snapshot(w: Window | undefined): EventLoopDelaySnapshot {
    const now = performance.now();
    if (!w || w.histogram.count === 0) {
      return { since: new Date(w?.startedAt ?? Date.now()).toISOString(), windowMs: w ? round(now - w.startedHr) : 0, samples: 0, p50Ms: 0, p99Ms: 0, maxMs: 0, meanMs: 0 };
    }
    const h = w.histogram;
    const ms = (ns: number): number => round(Math.max(0, ns / 1e6 - this.resolutionMs));
    return {
      since: new Date(w.startedAt).toISOString(),
      windowMs: round(now - w.startedHr),
      samples: h.count,
      p50Ms: ms(h.percentile(50)),
      p99Ms: ms(h.percentile(99)),
      maxMs: ms(h.max),
      meanMs: ms(h.mean),
    };
  }
}

/** Microsecond precision is plenty and keeps the JSON short. */
function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
