/**
 * native/socket-buffer.ts: the send buffer of a connected Unix socket, and the NBD server asking
 * for a large one on Unix-socket connections only (read back with `ss -xm`, the kernel's view).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { addonFunctions } from '../../../src/native/addon.js';
import { enlargeSendBuffer, UNIX_SEND_BUFFER } from '../../../src/native/socket-buffer.js';
import { NbdServer } from '../../../src/nbd/server.js';
import { tempDir } from '../../helpers/images.js';

const dir = tempDir('rebound-sndbuf-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const built = addonFunctions('setSendBuffer') !== undefined;

/** A connected pair over a Unix socket: [server side, client side]. */
async function unixPair(sock: string): Promise<[net.Socket, net.Socket, net.Server]> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(sock, r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect(sock);
  await new Promise<void>((r) => client.once('connect', () => r()));
  return [await accepted, client, server];
}

/** The send buffers (skmem tb) of the accepted Unix sockets on `sock`'s path, from `ss -xm`. */
function kernelSendBuffers(sock: string): number[] {
  const out = execFileSync('ss', ['-x', '-m', '-n'], { encoding: 'utf8' });
  const lines = out.split('\n');
  const found: number[] = [];
  lines.forEach((l, i) => {
    if (l.includes(sock) && l.startsWith('u_str') && /ESTAB/.test(l)) {
      const tb = /\btb(\d+)/.exec(l) ?? /\btb(\d+)/.exec(lines[i + 1] ?? ''); // same line or the next, by ss version
      if (tb) found.push(Number(tb[1]));
    }
  });
  return found;
}

it.skipIf(!built)('sets the send buffer of a connected Unix socket; the kernel reports twice the request', async () => {
  const [a, b, server] = await unixPair(path.join(dir, 'pair.sock'));
  try {
    expect(enlargeSendBuffer(a, 1024 * 1024)).toBe(2 * 1024 * 1024);
    expect(enlargeSendBuffer(a, 64 * 1024)).toBe(128 * 1024);
  } finally {
    a.destroy();
    b.destroy();
    server.close();
  }
});

it('answers undefined for a socket without a descriptor, never throws', () => {
  expect(enlargeSendBuffer(new net.Socket(), 1024 * 1024)).toBeUndefined();
});

it.skipIf(!built)('the NBD server asks for UNIX_SEND_BUFFER on a Unix-socket connection', async () => {
  const catalog = new Catalog();
  const device = new MemoryDevice(1 << 20);
  catalog.publish({ name: 'd', kind: 'adhoc', disk: 'd', size: device.size, capabilities: device.capabilities(), publish: ['nbd'], source: 'memory', device });
  const nbd = new NbdServer({ exports: catalog.view('nbd') });
  const sock = path.join(dir, 'nbd.sock');
  await nbd.listenUnix(sock);
  const client = net.connect(sock);
  try {
    await new Promise<void>((r) => client.once('data', () => r())); // the server's greeting: connection handled
    // ss names the path on the accepted (server) end: the enlarged one.
    expect(kernelSendBuffers(sock)).toEqual([2 * UNIX_SEND_BUFFER]);
  } finally {
    client.destroy();
    await nbd.close(1000);
    await catalog.close();
  }
});
