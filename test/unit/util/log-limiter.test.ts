import { describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/util/log.js';
import { LogLimiter } from '../../../src/util/log-limiter.js';

function setup(opts: { burst?: number; intervalMs?: number; maxKeys?: number } = {}) {
  let t = 1_000_000;
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ level: 'debug', format: 'json', write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) });
  const limiter = new LogLimiter({ ...opts, now: () => t });
  return { lines, log, limiter, advance: (ms: number) => (t += ms) };
}

describe('LogLimiter', () => {
  it('writes the first N lines of a key per interval, then one summary of the rest', () => {
    const { lines, log, limiter, advance } = setup({ burst: 3, intervalMs: 10_000 });
    const written = Array.from({ length: 50 }, (_, i) => limiter.warn(log, 'nbd-limit', '10.0.0.1', 'refused', { i }));
    expect(written.filter(Boolean)).toHaveLength(3);
    expect(lines.map((l) => l.i)).toEqual([0, 1, 2]);
    advance(9_999);
    expect(limiter.warn(log, 'nbd-limit', '10.0.0.1', 'refused', { i: 50 })).toBe(false);
    expect(lines).toHaveLength(3);
    advance(1);
    expect(limiter.warn(log, 'nbd-limit', '10.0.0.1', 'refused', { i: 51 })).toBe(true);
    expect(lines.slice(3)).toMatchObject([
      { level: 'warn', msg: 'suppressed 48 similar messages', kind: 'nbd-limit', client: '10.0.0.1', suppressed: 48, seconds: 10 },
      { level: 'warn', msg: 'refused', i: 51 },
    ]);
  });

  it('keeps separate budgets per kind and per client', () => {
    const { lines, log, limiter } = setup({ burst: 1 });
    limiter.warn(log, 'a', 'x', 'a from x');
    limiter.warn(log, 'a', 'x', 'a from x again');
    limiter.warn(log, 'a', 'y', 'a from y');
    limiter.warn(log, 'b', 'x', 'b from x');
    expect(lines.map((l) => l.msg)).toEqual(['a from x', 'a from y', 'b from x']);
    expect(limiter.size).toBe(3);
  });

  it('reports a flood that stopped when any later line sweeps the expired windows', () => {
    const { lines, log, limiter, advance } = setup({ burst: 2, intervalMs: 1000 });
    for (let i = 0; i < 7; i++) limiter.warn(log, 'rpc-record', '10.0.0.9', 'too large');
    advance(1000);
    limiter.info(log, 'other', '10.0.0.1', 'unrelated');
    expect(lines.map((l) => l.msg)).toEqual(['too large', 'too large', 'suppressed 5 similar messages', 'unrelated']);
    expect(lines[2]).toMatchObject({ client: '10.0.0.9', kind: 'rpc-record' });
    expect(limiter.size).toBe(1);
  });

  it('writes the summary at the level and with the context of the suppressed line', () => {
    const { lines, log, limiter } = setup({ burst: 1 });
    limiter.info(log, 'k', 'c', 'first');
    limiter.write(log.child({ conn: 7 }), 'error', 'k', 'c', 'second');
    limiter.flush();
    expect(lines[1]).toMatchObject({ level: 'error', conn: 7, msg: 'suppressed 1 similar message', suppressed: 1 });
    expect(limiter.size).toBe(0);
    limiter.flush();
    expect(lines).toHaveLength(2);
  });

  it('remembers at most maxKeys keys, closing the oldest (with its summary) to make room', () => {
    const { lines, log, limiter } = setup({ burst: 1, maxKeys: 100 });
    limiter.warn(log, 'k', 'first', 'line');
    limiter.warn(log, 'k', 'first', 'line');
    for (let i = 0; i < 1000; i++) limiter.warn(log, 'k', `client-${i}`, 'line');
    expect(limiter.size).toBe(100);
    expect(lines.filter((l) => String(l.msg).startsWith('suppressed'))).toMatchObject([{ client: 'first', suppressed: 1 }]);
    // The forgotten key starts a new window: written again.
    expect(limiter.warn(log, 'k', 'first', 'line')).toBe(true);
  });

  it('writes nothing extra when nothing was suppressed', () => {
    const { lines, log, limiter, advance } = setup({ burst: 5, intervalMs: 100 });
    for (let i = 0; i < 20; i++) {
      limiter.warn(log, 'k', 'c', 'line');
      advance(50);
    }
    expect(lines.every((l) => l.msg === 'line')).toBe(true);
    expect(lines).toHaveLength(20);
  });
});
