/**
 * Regress: a client that stopped reading its replies and then disconnected was never released.
 * With over 32 MiB of replies unsent, Transmission waits for the socket's 'drain', which a closed
 * socket never emits: the connection stayed open in the server for good, with its export opened,
 * and kept its slot under the connection limits, so such clients could lock an address (or the
 * whole daemon) out of NBD. Now the server stops the transmission when the socket closes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { Cmd } from '../../src/nbd/protocol.js';
import { startNbd } from '../helpers/nbd-fixture.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';

const MiB = 1024 * 1024;
let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

describe('regress: a client that stops reading and leaves', () => {
  it('is released, and its slot under the per-client limit is free again', async () => {
    const fx = await startNbd([{ name: 'd', device: new MemoryDevice(64 * MiB) }], { maxConnectionsPerClient: 1 });
    const { server, socket: sock } = fx;
    const clients: RawNbdClient[] = [];
    cleanup = async () => {
      for (const c of clients) c.close();
      await fx.close();
    };

    const deaf = await RawNbdClient.connect({ path: sock });
    clients.push(deaf);
    await deaf.handshake('d', { structured: false });
    deaf.socket.pause();
    for (let i = 0; i < 64; i++) deaf.request(Cmd.READ, { cookie: BigInt(i + 1), offset: (i % 16) * 4 * MiB, length: 4 * MiB });
    // Let the server fill its send buffer past its limit (reads from memory are immediate).
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 300));
    deaf.close();

    for (let i = 0; i < 500 && server.connectionCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(server.connectionCount).toBe(0);
    const next = await RawNbdClient.connect({ path: sock });
    clients.push(next);
    expect((await next.handshake('d')).size).toBe(64 * MiB);
  });
});
