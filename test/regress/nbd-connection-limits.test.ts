/**
 * Regress: NbdServer accepted any number of connections, from one address or in all, each with its
 * handshake state and (after the handshake) an opened export and reply buffers. Now a connection
 * over nbdMaxConnectionsPerClient (per remote address; all Unix-socket clients are "unix") or
 * nbdMaxConnections (per server) is closed at once after the accept, without a greeting, and the
 * connections already open carry on; when one of them leaves, a new one is accepted again.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { Catalog } from '../../src/exports/catalog.js';
import { NbdServer, type NbdServerOptions } from '../../src/nbd/server.js';
import { silentLogger } from '../../src/util/log.js';
import { publishFixture } from '../helpers/nbd-fixture.js';
import { captureLog } from '../helpers/nbd-interop.js';
import { tempDir } from '../helpers/images.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

async function start(opts: Omit<NbdServerOptions, 'exports' | 'log'>) {
  const { log, events } = captureLog();
  const catalog = new Catalog(silentLogger);
  publishFixture(catalog, { name: 'd', device: new MemoryDevice(1024 * 1024) });
  const server = new NbdServer({ exports: catalog.view('nbd'), log, ...opts });
  const dir = tempDir('rebound-nbd-limits-');
  const socket = path.join(dir, 'nbd.sock');
  const tcp = await server.listenTcp('127.0.0.1', 0);
  await server.listenUnix(socket);
  const port = tcp.kind === 'tcp' ? tcp.port : 0;
  const clients: RawNbdClient[] = [];
  const connect = async (target: { port: number } | { path: string }) => {
    const c = await RawNbdClient.connect(target);
    clients.push(c);
    return c;
  };
  cleanup = async () => {
    for (const c of clients) c.close();
    await server.close(2000);
    await catalog.close();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { server, port, socket, events, connect };
}

/** Waits (bounded by count, not by a clock) until the server has noticed departures. */
async function untilCount(server: NbdServer, n: number): Promise<void> {
  for (let i = 0; i < 500 && server.connectionCount !== n; i++) await new Promise((r) => setTimeout(r, 10));
  expect(server.connectionCount).toBe(n);
}

/** The over-limit connection is closed without a single byte of greeting. */
async function expectRefused(c: RawNbdClient): Promise<void> {
  await expect(c.read(1, 5000)).rejects.toThrow();
  expect(await c.closedWithin(5000)).toBe(true);
}

describe('regress: NBD connection limits', () => {
  it('closes the N+1-th connection from one address at once; the first N complete their handshakes; a freed slot is reusable', async () => {
    const N = 4;
    const fx = await start({ maxConnectionsPerClient: N });
    const first: RawNbdClient[] = [];
    for (let i = 0; i < N; i++) first.push(await fx.connect({ port: fx.port }));
    await untilCount(fx.server, N);

    const extra = await fx.connect({ port: fx.port });
    await expectRefused(extra);
    const refusals = fx.events.filter((e) => e.msg.includes('per-client connection limit'));
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toMatchObject({ client: '127.0.0.1', limit: N, setting: 'nbdMaxConnectionsPerClient' });

    // The first N are unaffected: each completes a handshake after the refusal.
    for (const c of first) expect((await c.handshake('d')).size).toBe(1024 * 1024);
    expect(fx.server.connectionCount).toBe(N);

    // Another address (the Unix socket counts as "unix") has its own allowance.
    const other = await fx.connect({ path: fx.socket });
    expect((await other.handshake('d')).size).toBe(1024 * 1024);

    // One of the N leaves; a new connection from the same address is accepted and served.
    first[0]!.close();
    await untilCount(fx.server, N); // N-1 TCP + 1 Unix
    const again = await fx.connect({ port: fx.port });
    expect((await again.handshake('d')).size).toBe(1024 * 1024);
    expect(again.isClosed).toBe(false);
  });

  it('counts every Unix-socket client as the one address "unix"', async () => {
    const fx = await start({ maxConnectionsPerClient: 2 });
    const a = await fx.connect({ path: fx.socket });
    const b = await fx.connect({ path: fx.socket });
    await untilCount(fx.server, 2);
    await expectRefused(await fx.connect({ path: fx.socket }));
    expect(fx.events.find((e) => e.msg.includes('per-client connection limit'))).toMatchObject({ client: 'unix', limit: 2 });
    await a.handshake('d');
    await b.handshake('d');
  });

  it('closes a connection over the total limit whatever its address, and accepts again when one leaves', async () => {
    const fx = await start({ maxConnections: 3, maxConnectionsPerClient: 64 });
    const tcp1 = await fx.connect({ port: fx.port });
    const tcp2 = await fx.connect({ port: fx.port });
    const unix1 = await fx.connect({ path: fx.socket });
    await untilCount(fx.server, 3);
    await expectRefused(await fx.connect({ path: fx.socket }));
    await expectRefused(await fx.connect({ port: fx.port }));
    const refusals = fx.events.filter((e) => e.msg.includes('NBD connection limit'));
    expect(refusals.map((e) => e.client)).toEqual(['unix', '127.0.0.1']);
    expect(refusals[0]).toMatchObject({ limit: 3, setting: 'nbdMaxConnections' });
    for (const c of [tcp1, tcp2, unix1]) await c.handshake('d');

    unix1.close();
    await untilCount(fx.server, 2);
    const next = await fx.connect({ port: fx.port });
    await next.handshake('d');
    await untilCount(fx.server, 3);
  });
});
