import { describe, expect, it } from 'vitest';
import { KeyedMutex, Mutex } from '../../../src/util/mutex.js';

const tick = (ms = 1): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('Mutex', () => {
  it('runs sections one at a time, in order', async () => {
    const m = new Mutex();
    const log: string[] = [];
    await Promise.all(
      [1, 2, 3].map((i) =>
        m.run(async () => {
          log.push(`start ${i}`);
          await tick(5);
          log.push(`end ${i}`);
        }),
      ),
    );
    expect(log).toEqual(['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3']);
  });
  it('releases the lock when a section throws', async () => {
    const m = new Mutex();
    await expect(m.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await m.run(() => 42)).toBe(42);
    expect(m.locked).toBe(false);
  });
});

describe('KeyedMutex', () => {
  it('serialises per key, runs different keys concurrently, and forgets idle keys', async () => {
    const m = new KeyedMutex<number>();
    let concurrentSameKey = 0;
    let maxSameKey = 0;
    let concurrentAll = 0;
    let maxAll = 0;
    const job = (key: number): Promise<void> =>
      m.run(key, async () => {
        concurrentAll++;
        if (key === 1) concurrentSameKey++;
        maxAll = Math.max(maxAll, concurrentAll);
        maxSameKey = Math.max(maxSameKey, concurrentSameKey);
        await tick(5);
        concurrentAll--;
        if (key === 1) concurrentSameKey--;
      });
    await Promise.all([job(1), job(1), job(2), job(1), job(3)]);
    expect(maxSameKey).toBe(1);
    expect(maxAll).toBeGreaterThan(1);
    expect(m.size).toBe(0);
  });
});
