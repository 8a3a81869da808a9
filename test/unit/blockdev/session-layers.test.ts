/**
 * The layers a recovery session stacks: qos (token buckets), stats, switch (drain + re-point),
 * dirty tracker, freeze (copy-before-write).
 */
import { describe, expect, it, vi } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { DirtyTracker } from '../../../src/blockdev/layers/dirty-tracker.js';
import { FaultLayer } from '../../../src/blockdev/layers/fault.js';
import { FreezeLayer } from '../../../src/blockdev/layers/freeze.js';
import { QosLayer, QosLimiter } from '../../../src/blockdev/layers/qos.js';
import { StatsLayer } from '../../../src/blockdev/layers/stats.js';
import { SwitchableDevice } from '../../../src/blockdev/layers/switchable.js';
import { TokenBucket } from '../../../src/util/token-bucket.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Runs `fn` on a fake clock (setTimeout and performance.now), moved 1 ms at a time until fn ends,
 * and returns the clock's seconds: rate tests then measure the limiter's arithmetic, never the
 * machine's speed. Make the limiters inside `fn`, so that they start on the fake clock.
 */
async function onFakeClock(fn: () => Promise<unknown>): Promise<number> {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  try {
    const start = performance.now();
    let done = false;
    const run = fn().finally(() => (done = true));
    for (let steps = 0; !done && steps < 600_000; steps++) await vi.advanceTimersByTimeAsync(1);
    await run;
    return (performance.now() - start) / 1000;
  } finally {
    vi.useRealTimers();
  }
}

/** Runs `total` operations with `workers` callers at once (a count, not a time). */
async function runOps(total: number, workers: number, op: () => Promise<void>): Promise<void> {
  let started = 0;
  await Promise.all(Array.from({ length: workers }, async () => {
    while (started < total) {
      started++;
      await op();
    }
  }));
}

describe('TokenBucket', () => {
  it('holds a long-run rate and serves waiters in order', async () => {
    const order: number[] = [];
    const s = await onFakeClock(() => {
      const b = new TokenBucket(1000, 0.05); // 1000 tokens/s, burst 50
      return Promise.all(Array.from({ length: 10 }, (_, i) => b.take(55).then(() => order.push(i))));
    });
    // 550 tokens, 50 of them burst: 0.5 s.
    expect(s).toBeGreaterThan(0.49);
    expect(s).toBeLessThan(0.52);
    expect(order).toEqual([...order].sort((a, c) => a - c));
  });

  it('is free at rate 0 and applies a new rate at once', async () => {
    let free = -1;
    const s = await onFakeClock(async () => {
      const b = new TokenBucket(0);
      await b.take(1e9);
      free = performance.now();
      b.setRate(100);
      await b.take(30); // no tokens saved at rate 0: 30 tokens at 100/s
    });
    expect(free).toBe(0);
    expect(s).toBeGreaterThan(0.29);
    expect(s).toBeLessThan(0.32);
  });
});

describe('QosLayer', () => {
  it('limits IOPS within 10% of the limit', async () => {
    const buf = Buffer.alloc(4096);
    const s = await onFakeClock(() => {
      const dev = new QosLayer(new MemoryDevice(MiB), new QosLimiter({ iops: 200 }));
      return runOps(300, 8, () => dev.read(buf, 0));
    });
    const rate = 300 / s;
    expect(rate).toBeGreaterThan(180);
    expect(rate).toBeLessThan(220 + 20 / s); // the burst (0.1 s worth) on top
  });

  it('limits bandwidth within 10%, and a shared limiter caps two exports together', async () => {
    const buf = Buffer.alloc(64 * KiB);
    const writes = 96; // 6 MiB
    const s = await onFakeClock(() => {
      const shared = new QosLimiter({ bps: 4 * MiB });
      const a = new QosLayer(new MemoryDevice(MiB), new QosLimiter({}), shared);
      const b = new QosLayer(new MemoryDevice(MiB), new QosLimiter({}), shared);
      let turn = 0;
      return runOps(writes, 4, () => (turn++ % 2 === 0 ? a : b).write(buf, 0));
    });
    const rate = (writes * buf.length) / s;
    expect(rate).toBeGreaterThan(0.9 * 4 * MiB);
    expect(rate).toBeLessThan(1.1 * 4 * MiB + (0.4 * MiB + 4 * 64 * KiB) / s);
  });

  it('changes limits live', async () => {
    let limiter!: QosLimiter;
    const s = await onFakeClock(() => {
      limiter = new QosLimiter({ iops: 10 });
      const dev = new QosLayer(new MemoryDevice(MiB), limiter);
      limiter.set({});
      return Promise.all(Array.from({ length: 100 }, () => dev.read(Buffer.alloc(512), 0)));
    });
    expect(s).toBeLessThan(0.005); // the clock's first step
    expect(limiter.limits).toEqual({});
  });
});

describe('StatsLayer', () => {
  it('counts operations, bytes and errors', async () => {
    let fail = false;
    const fault = new FaultLayer(new MemoryDevice(MiB), { error: () => (fail ? 'EIO' : undefined) });
    const s = new StatsLayer(fault);
    await s.write(Buffer.alloc(4096), 0);
    await s.read(Buffer.alloc(512), 0);
    await s.flush();
    fail = true;
    await expect(s.read(Buffer.alloc(512), 0)).rejects.toThrow();
    const c = s.counters();
    expect(c).toMatchObject({ reads: 2, writes: 1, readBytes: 1024, writeBytes: 4096, flushes: 1, errors: 1 });
    expect(c.writeRate).toBeGreaterThan(0);
  });
});

describe('SwitchableDevice', () => {
  it('drains requests in flight, holds new ones, and sends later ones to the new device', async () => {
    const a = new FaultLayer(new MemoryDevice(MiB), { delayMs: () => 50 });
    const b = new MemoryDevice(MiB);
    const sw = new SwitchableDevice(a);
    const early = Promise.all(Array.from({ length: 16 }, (_, i) => sw.write(Buffer.alloc(512, i + 1), i * 512)));
    await new Promise((r) => setTimeout(r, 5));
    let lateDone = false;
    let switchedAt = 0;
    const switching = sw.exclusive(async () => {
      // Every early write finished before we run: copy A to B, then re-point.
      const buf = Buffer.alloc(16 * 512);
      await a.read(buf, 0);
      for (let i = 0; i < 16; i++) expect(buf[i * 512]).toBe(i + 1);
      await b.write(buf, 0);
      expect(lateDone).toBe(false);
      switchedAt = performance.now();
      sw.switchTo(b);
    });
    const late = sw.write(Buffer.alloc(512, 0xee), 8192).then(() => (lateDone = true));
    await Promise.all([early, switching, late]);
    const check = Buffer.alloc(512);
    await b.read(check, 8192);
    expect(check[0]).toBe(0xee); // the late write went to B only
    await a.read(check, 8192);
    expect(check[0]).toBe(0);
    expect(switchedAt).toBeGreaterThan(0);
    expect(sw.next).toBe(b);
  });

  it('adapts requests the new device cannot do', async () => {
    const mem = new MemoryDevice(MiB);
    const plain = { ...mem, name: 'plain', size: mem.size, capabilities: () => ({ ...mem.capabilities(), canTrim: false, canZero: false, canFua: false }),
      read: mem.read.bind(mem), write: mem.write.bind(mem), flush: mem.flush.bind(mem), trim: () => Promise.reject(new Error('no trim')),
      zero: () => Promise.reject(new Error('no zero')), extents: mem.extents.bind(mem), close: mem.close.bind(mem) };
    await mem.write(Buffer.alloc(8192, 1), 0);
    const sw = new SwitchableDevice(new MemoryDevice(MiB));
    await sw.exclusive(async () => void sw.switchTo(plain));
    await sw.zero(0, 4096);
    await sw.trim(4096, 4096);
    await sw.write(Buffer.alloc(512, 2), 0, { fua: true });
    await expect(sw.zero(0, 4096, { fast: true })).rejects.toMatchObject({ code: 'ENOTSUP' });
    const buf = Buffer.alloc(4096);
    await mem.read(buf, 0);
    expect(buf[0]).toBe(2);
    expect(buf[600]).toBe(0);
  });
});

describe('DirtyTracker', () => {
  it('marks written units when writes complete, only while tracking', async () => {
    const t = new DirtyTracker(new MemoryDevice(8 * MiB), MiB);
    await t.write(Buffer.alloc(4096), 0);
    expect(t.dirtyUnits).toBe(0);
    t.start();
    await t.write(Buffer.alloc(4096), MiB - 2048); // spans units 0 and 1
    await t.zero(5 * MiB, MiB);
    expect(t.snapshot()).toEqual([0, 1, 5]);
    expect(t.clear(1)).toBe(true);
    expect(t.snapshot()).toEqual([0, 5]);
    t.stop();
    expect(t.dirtyUnits).toBe(0);
  });

  it('wakes a waiter on the next completed write, and on abort', async () => {
    const t = new DirtyTracker(new MemoryDevice(8 * MiB), MiB);
    t.start();
    let woke = false;
    const waiting = t.whenDirty().then(() => (woke = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(woke).toBe(false);
    await t.write(Buffer.alloc(512), 3 * MiB);
    await waiting;
    expect(woke).toBe(true);
    t.clear(3);
    const ac = new AbortController();
    const aborted = t.whenDirty(ac.signal);
    ac.abort(new Error('stop'));
    await expect(aborted).rejects.toThrow('stop');
  });
});

describe('FreezeLayer', () => {
  it('reads the disk as it was at the freeze while writes continue', async () => {
    const mem = new MemoryDevice(4 * MiB);
    await mem.write(Buffer.alloc(4 * MiB, 1), 0);
    const f = new FreezeLayer(mem);
    await f.freeze(MiB);
    await f.write(Buffer.alloc(4096, 2), 10); // unit 0 saved first
    await f.write(Buffer.alloc(2 * MiB, 3), MiB + 5); // units 1..3 saved
    const u0 = await f.readFrozen(0);
    const u2 = await f.readFrozen(2);
    expect(u0.every((b) => b === 1)).toBe(true);
    expect(u2.every((b) => b === 1)).toBe(true);
    // After the reader took a unit, writes to it need no copy.
    const before = f.savedBytes;
    await f.write(Buffer.alloc(512, 4), 0);
    expect(f.savedBytes).toBe(before);
    f.release(3);
    expect(f.savedBytes).toBe(before - MiB);
    f.thaw();
    const now = Buffer.alloc(16);
    await f.read(now, 0);
    expect(now[0]).toBe(4);
  });

  it('waits for writes that started before the freeze', async () => {
    let delay = 60;
    const slow = new FaultLayer(new MemoryDevice(MiB), { delayMs: () => delay });
    const f = new FreezeLayer(slow);
    const w = f.write(Buffer.alloc(512, 9), 0);
    await new Promise((r) => setTimeout(r, 5));
    await f.freeze(64 * KiB);
    delay = 0;
    await w;
    const u0 = await f.readFrozen(0);
    expect(u0[0]).toBe(9); // the view includes the write in flight at the freeze
  });
});
