import { describe, expect, it } from 'vitest';
import { RangeLock } from '../../../src/util/range-lock.js';

const tick = (ms = 2): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('RangeLock', () => {
  it('runs disjoint ranges together and overlapping ones one after the other, FIFO', async () => {
    const lock = new RangeLock();
    const log: string[] = [];
    const job = (name: string, s: number, e: number): Promise<void> =>
      lock.run(s, e, async () => {
        log.push(`+${name}`);
        await tick(5);
        log.push(`-${name}`);
      });
    await Promise.all([job('a', 0, 10), job('b', 20, 30), job('c', 5, 25), job('d', 40, 50), job('e', 22, 23)]);
    // a, b, d start at once; c waits for a and b; e overlaps b and the earlier waiting c, so it waits for c.
    expect(log.slice(0, 3)).toEqual(['+a', '+b', '+d']);
    expect(log.indexOf('+c')).toBeGreaterThan(Math.max(log.indexOf('-a'), log.indexOf('-b')));
    expect(log.indexOf('+e')).toBeGreaterThan(log.indexOf('-c'));
    expect(lock.size).toBe(0);
  });
  it('releases on failure', async () => {
    const lock = new RangeLock();
    await expect(lock.run(0, 1, () => Promise.reject(new Error('x')))).rejects.toThrow('x');
    expect(await lock.run(0, 1, async () => 5)).toBe(5);
  });
});
