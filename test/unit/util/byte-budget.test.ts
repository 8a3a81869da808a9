import { describe, expect, it } from 'vitest';
import { ByteBudget } from '../../../src/util/byte-budget.js';

const settled = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

describe('ByteBudget', () => {
  it('grants at once what fits and queues the rest until released', async () => {
    const b = new ByteBudget(100);
    expect(await b.acquire(60)).toBe(60);
    let got = 0;
    const p = b.acquire(50).then((n) => (got = n));
    await settled();
    expect(got).toBe(0);
    expect(b.waiting).toBe(1);
    b.release(10);
    await settled();
    expect(got).toBe(50);
    expect(b.used).toBe(100);
    await p;
  });

  it('serves waiters in arrival order: a small request does not pass a large one', async () => {
    const b = new ByteBudget(100);
    await b.acquire(90);
    const order: string[] = [];
    const big = b.acquire(80).then(() => order.push('big'));
    const small = b.acquire(5).then(() => order.push('small'));
    expect(b.tryAcquire(5)).toBe(0); // fits, but others are waiting
    await settled();
    expect(order).toEqual([]);
    b.release(90);
    await Promise.all([big, small]);
    expect(order).toEqual(['big', 'small']);
    expect(b.used).toBe(85);
  });

  it('clamps an acquisition larger than the total, so it runs alone', async () => {
    const b = new ByteBudget(64);
    await b.acquire(1);
    let got = 0;
    const p = b.acquire(1000).then((n) => (got = n));
    await settled();
    expect(got).toBe(0);
    b.release(1);
    await p;
    expect(got).toBe(64);
    expect(b.used).toBe(64);
    b.release(got);
    expect(b.used).toBe(0);
  });

  it('an aborted waiter leaves the queue, rejects with the reason, and unblocks those behind it', async () => {
    const b = new ByteBudget(100);
    await b.acquire(50);
    const ac = new AbortController();
    const blocked = b.acquire(80, ac.signal);
    let small = 0;
    const behind = b.acquire(40).then((n) => (small = n));
    await settled();
    expect(small).toBe(0);
    ac.abort(new Error('client left'));
    await expect(blocked).rejects.toThrow('client left');
    await behind;
    expect(small).toBe(40);
    expect(b.waiting).toBe(0);
    expect(b.used).toBe(90);
  });

  it('rejects at once when the signal is already aborted, reserving nothing', async () => {
    const b = new ByteBudget(10);
    const ac = new AbortController();
    ac.abort(new Error('gone'));
    await expect(b.acquire(1, ac.signal)).rejects.toThrow('gone');
    expect(b.used).toBe(0);
  });

  it('many holders never hold more than the total', async () => {
    const b = new ByteBudget(1000);
    let peak = 0;
    const holders = Array.from({ length: 200 }, async (_, i) => {
      const n = await b.acquire(37 + (i % 13) * 11);
      peak = Math.max(peak, b.used);
      await settled();
      b.release(n);
    });
    await Promise.all(holders);
    expect(peak).toBeLessThanOrEqual(1000);
    expect(peak).toBeGreaterThan(900);
    expect(b.used).toBe(0);
  });

  it('refuses a total that is not a positive integer', () => {
    expect(() => new ByteBudget(0)).toThrow(RangeError);
    expect(() => new ByteBudget(1.5)).toThrow(RangeError);
  });
});
