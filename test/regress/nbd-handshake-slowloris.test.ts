/**
 * Regress (slowloris): the handshake timeout must bound the whole handshake, not the gap between
 * bytes. A client that sends its side of the handshake one byte every 50 ms, with the timeout at
 * 300 ms, is dropped long before it could have finished; a timer reset by each byte would keep it
 * forever. A client that finishes its handshake in time is not touched by the timer afterwards.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { Catalog } from '../../src/exports/catalog.js';
import { encodeGoData, encodeOption } from '../../src/nbd/messages.js';
import { Cmd, Opt } from '../../src/nbd/protocol.js';
import { NbdServer } from '../../src/nbd/server.js';
import { silentLogger } from '../../src/util/log.js';
import { tempDir } from '../helpers/images.js';
import { captureLog } from '../helpers/nbd-interop.js';
import { publishFixture } from '../helpers/nbd-fixture.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';

const NAME = 'an-export-with-a-rather-long-name-so-the-handshake-has-many-bytes';
let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

async function start() {
  const { log, events } = captureLog();
  const catalog = new Catalog(silentLogger);
  publishFixture(catalog, { name: NAME, device: new MemoryDevice(1024 * 1024) });
  const server = new NbdServer({ exports: catalog.view('nbd'), log, handshakeTimeoutMs: 300 });
  const dir = tempDir('rebound-nbd-slow-');
  await server.listenUnix(path.join(dir, 'nbd.sock'));
  const tcp = await server.listenTcp('127.0.0.1', 0);
  const clients: RawNbdClient[] = [];
  cleanup = async () => {
    for (const c of clients) c.close();
    await server.close(2000);
    await catalog.close();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const connect = async () => {
    const c = await RawNbdClient.connect({ port: tcp.kind === 'tcp' ? tcp.port : 0 });
    clients.push(c);
    return c;
  };
  return { server, events, connect };
}

describe('regress: NBD handshake timeout against a slowloris client', () => {
  it('drops a client that sends one byte every 50 ms before it could finish', async () => {
    const fx = await start();
    const c = await fx.connect();
    await c.read(18); // the greeting
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3);
    const reply = Buffer.concat([flags, encodeOption(Opt.GO, encodeGoData(NAME, [3]))]);
    expect(reply.length).toBeGreaterThan(60); // over 3 s of dribbling at 50 ms a byte

    let sent = 0;
    while (sent < reply.length && !c.isClosed) {
      c.socket.write(reply.subarray(sent, sent + 1));
      sent++;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(c.isClosed).toBe(true);
    expect(sent).toBeLessThan(reply.length);
    expect(fx.events.some((e) => e.msg === 'handshake timed out; closing')).toBe(true);
    expect(fx.server.connectionCount).toBe(0);
  });

  it('leaves a client that finished its handshake in time alone', async () => {
    const fx = await start();
    const c = await fx.connect();
    await c.handshake(NAME);
    expect(await c.closedWithin(900)).toBe(false); // three timeouts later
    c.request(Cmd.READ, { cookie: 7n, offset: 0, length: 512 });
    const chunks = await c.chunks();
    expect(chunks[chunks.length - 1]!.cookie).toBe(7n);
    expect(fx.events.some((e) => e.msg === 'handshake timed out; closing')).toBe(false);
  });
});
