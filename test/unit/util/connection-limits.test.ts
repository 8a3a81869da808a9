import { describe, expect, it } from 'vitest';
import { ConnectionLimits } from '../../../src/util/connection-limits.js';

describe('ConnectionLimits', () => {
  it('admits up to the per-client and total limits, and counts a release once', () => {
    const limits = new ConnectionLimits({ maxConnections: 3, maxConnectionsPerClient: 2 });
    const a1 = limits.admit('a');
    const a2 = limits.admit('a');
    expect(a1.admitted && a2.admitted).toBe(true);
    expect(limits.admit('a')).toEqual({ admitted: false, over: 'client', limit: 2 });
    const b1 = limits.admit('b');
    expect(b1.admitted).toBe(true);
    expect(limits.admit('c')).toEqual({ admitted: false, over: 'total', limit: 3 });
    expect(limits.size).toBe(3);
    if (a1.admitted) {
      a1.release();
      a1.release(); // twice: counted once
    }
    expect(limits.size).toBe(2);
    expect(limits.admit('a').admitted).toBe(true);
    expect(limits.admit('d')).toMatchObject({ admitted: false, over: 'total' });
  });
});
