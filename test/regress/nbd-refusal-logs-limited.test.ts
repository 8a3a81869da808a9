/**
 * Regress (issue 12, limits): every refused NBD connection wrote a warning, so a client refused in
 * a loop (over the per-client limit, or timing out its handshake) could fill the disk with log
 * lines and drown the lines about other clients. Now refusal lines go through a LogLimiter per
 * kind and client address: at most 10 a minute each, then one "suppressed K similar messages"
 * line; other kinds and other clients keep their own budget.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { LogLimiter } from '../../src/util/log-limiter.js';
import { captureLog } from '../helpers/nbd-interop.js';
import { startNbd } from '../helpers/nbd-fixture.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

describe('regress: NBD refusal log lines are rate-limited', () => {
  it('50 connections over the per-client limit give 10 lines, then one summary; the handshake timeout has its own budget', async () => {
    const { log, events } = captureLog();
    let now = 0;
    const logLimiter = new LogLimiter({ now: () => now });
    const fx = await startNbd([{ name: 'd', device: new MemoryDevice(1024 * 1024) }], { log, maxConnectionsPerClient: 1, handshakeTimeoutMs: 3000, logLimiter });
    const { socket } = fx;
    const clients: RawNbdClient[] = [];
    cleanup = async () => {
      for (const c of clients) c.close();
      await fx.close();
    };

    const holder = await RawNbdClient.connect({ path: socket });
    clients.push(holder);
    await holder.greet();
    for (let i = 0; i < 50; i++) {
      const c = await RawNbdClient.connect({ path: socket });
      clients.push(c);
      expect(await c.closedWithin(3000)).toBe(true);
    }
    const limitLines = (): number => events.filter((e) => e.msg === 'NBD per-client connection limit reached; closing new connection').length;
    expect(limitLines()).toBe(10);

    // The holder never finishes its handshake: its timeout is logged under its own kind.
    expect(await holder.closedWithin(15_000)).toBe(true);
    expect(events.filter((e) => e.msg === 'handshake timed out; closing')).toHaveLength(1);

    // A minute later, the next refusal first reports what was left out.
    now += 60_000;
    const blocker = await RawNbdClient.connect({ path: socket });
    clients.push(blocker);
    await blocker.greet();
    const c = await RawNbdClient.connect({ path: socket });
    clients.push(c);
    expect(await c.closedWithin(3000)).toBe(true);
    expect(events.filter((e) => e.msg === 'suppressed 40 similar messages')).toMatchObject([{ kind: 'nbd-client-connection-limit', client: 'unix', suppressed: 40 }]);
    expect(limitLines()).toBe(11);
  });
});
