import { afterEach, describe, expect, it } from 'vitest';
import { EventLoopDelayMonitor } from '../../../src/util/event-loop.js';

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Blocks the loop for a bounded amount of work (no clock reads: the work, not the time, is fixed). */
function busy(iterations: number): number {
  let x = 0x9e3779b9;
  for (let i = 0; i < iterations; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
  }
  return x;
}

/** Iterations that take at least `ms` on this machine, found once (a stall clearly above idle jitter). */
function iterationsFor(ms: number): number {
  let n = 1 << 20;
  for (;;) {
    const t0 = performance.now();
    busy(n);
    if (performance.now() - t0 >= ms || n >= 1 << 30) return n;
    n *= 2;
  }
}

let monitor: EventLoopDelayMonitor | undefined;
afterEach(() => monitor?.stop());

describe('EventLoopDelayMonitor', () => {
  it('rejects a resolution that is not a positive integer', () => {
    expect(() => new EventLoopDelayMonitor({ resolutionMs: 0 })).toThrow(RangeError);
    expect(() => new EventLoopDelayMonitor({ resolutionMs: 2.5 })).toThrow(RangeError);
  });

  it('reports empty windows before it starts', () => {
    const r = new EventLoopDelayMonitor().report();
    expect(r.resolutionMs).toBe(10);
    expect(r.sinceStart).toMatchObject({ samples: 0, p50Ms: 0, p99Ms: 0, maxMs: 0, meanMs: 0 });
  });

  it('records samples in both windows; start() and stop() are idempotent', async () => {
    monitor = new EventLoopDelayMonitor({ resolutionMs: 5 }).start();
    expect(monitor.start()).toBe(monitor);
    expect(monitor.running).toBe(true);
    await tick(100);
    const r = monitor.report();
    expect(r.resolutionMs).toBe(5);
    for (const w of [r.sinceStart, r.sinceReset]) {
      expect(w.samples).toBeGreaterThan(0);
      expect(w.windowMs).toBeGreaterThanOrEqual(90);
      expect(Date.parse(w.since)).not.toBeNaN();
      expect(w.p50Ms).toBeGreaterThanOrEqual(0);
      expect(w.p99Ms).toBeGreaterThanOrEqual(w.p50Ms);
      expect(w.maxMs).toBeGreaterThanOrEqual(w.p99Ms);
    }
    monitor.stop();
    monitor.stop();
    expect(monitor.running).toBe(false);
    const samples = monitor.report().sinceStart.samples;
    await tick(50);
    expect(monitor.report().sinceStart.samples).toBe(samples); // stopped: no more samples, figures kept
  });

  it('a blocked loop raises max; reset() starts a new window and keeps the since-start one', async () => {
    const n = iterationsFor(60);
    monitor = new EventLoopDelayMonitor({ resolutionMs: 5 }).start();
    await tick(50);
    monitor.reset();
    await tick(30); // a reset drops the tick in progress: let the new window take its first sample
    const before = monitor.report().sinceReset.maxMs;
    const t0 = performance.now();
    busy(n);
    const blockedMs = performance.now() - t0;
    await tick(30);
    const after = monitor.report();
    expect(after.sinceReset.maxMs).toBeGreaterThan(before);
    // Each sampler's ticks before and after the block are >= blockedMs apart, and the monitor
    // subtracts one resolution (5 ms). The two samplers have different phases, so their maxima differ.
    expect(after.sinceReset.maxMs).toBeGreaterThanOrEqual(blockedMs - 5 - 1);
    expect(after.sinceStart.maxMs).toBeGreaterThanOrEqual(blockedMs - 5 - 1);
    const stall = after.sinceStart.maxMs;

    const read = monitor.report({ reset: true }); // reads, then starts the new window
    expect(read.sinceReset.maxMs).toBe(after.sinceReset.maxMs);
    const fresh = monitor.report().sinceReset;
    expect(fresh.samples).toBe(0);
    expect(fresh.maxMs).toBe(0);
    expect(fresh.windowMs).toBeLessThan(after.sinceReset.windowMs);
    expect(monitor.report().sinceStart.maxMs).toBeGreaterThanOrEqual(stall);
  });
});
