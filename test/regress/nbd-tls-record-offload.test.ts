/**
 * Regress: after a TLS 1.3 handshake the NBD server carries the connection on with its own record
 * layer (tls/record-stream.ts, handed over by tls/record-tap.ts) instead of Node's TLS socket, which
 * cost twice nbdkit's CPU per GiB of large reads. With a real TLS client (Node's, i.e. OpenSSL's;
 * qemu and libnbd with GnuTLS are in test/interop/nbd-tls.test.ts):
 *  - every TLS 1.3 suite carries large WRITEs and READs intact, and the log says whose records;
 *  - TLS 1.2, and a client that sends a request behind NBD_OPT_GO in the same record, stay on
 *    Node's TLS socket and are served all the same;
 *  - bytes that are not a record of the connection close it, and the server goes on serving.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { ByteReader } from '../../src/nbd/byte-reader.js';
import { encodeGoData, encodeOption, encodeRequest } from '../../src/nbd/messages.js';
import { Cmd, Opt, Rep } from '../../src/nbd/protocol.js';
import { tlsRecordFunctions } from '../../src/native/tls-record.js';
import { loadCertDir } from '../../src/tls/cert-dir.js';
import { NbdTls } from '../../src/tls/nbd-tls.js';
import { createLogger } from '../../src/util/log.js';
import { tempDir } from '../helpers/images.js';
import { startNbd, type NbdFixture } from '../helpers/nbd-fixture.js';
import { missingPeers } from '../helpers/peers.js';
import { makeTlsFixture } from '../helpers/tls-certs.js';

const missing = missingPeers('openssl');
const SIZE = 16 * 1024 * 1024;
let nbd: NbdFixture;
let caCert: string;
const lines: string[] = [];

interface Client {
  s: tls.TLSSocket;
  raw: net.Socket;
  reader: ByteReader;
}

/** Greeting, STARTTLS, the TLS handshake with `opts`, then GO ('disk'); `behindGo` goes in GO's record. */
async function connect(opts: tls.ConnectionOptions, behindGo?: Buffer): Promise<Client> {
  const raw = net.connect(nbd.port, '127.0.0.1');
  raw.on('error', () => undefined);
  const plain = new ByteReader(raw);
  await plain.readExact(18);
  raw.write(Buffer.from([0, 0, 0, 3]));
  raw.write(encodeOption(Opt.STARTTLS));
  expect((await plain.readExact(20)).readUInt32BE(12)).toBe(Rep.ACK);
  plain.detach();
  const s = tls.connect({ socket: raw, servername: 'localhost', ca: caCert, ...opts });
  s.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => s.once('secureConnect', resolve).once('error', reject));
  const reader = new ByteReader(s);
  const go = encodeOption(Opt.GO, encodeGoData('disk'));
  s.write(behindGo ? Buffer.concat([go, behindGo]) : go);
  for (;;) {
    const head = await reader.readExact(20);
    await reader.readExact(head.readUInt32BE(16));
    const type = head.readUInt32BE(12);
    if (type === Rep.ACK) return { s, raw, reader };
    if (type >= 0x80000000) throw new Error(`GO failed: 0x${type.toString(16)}`);
  }
}

async function writeAt(c: Client, offset: number, data: Buffer, cookie: bigint): Promise<void> {
  c.s.write(Buffer.concat([encodeRequest(0, Cmd.WRITE, cookie, offset, data.length), data]));
  const reply = await c.reader.readExact(16);
  expect(reply.readUInt32BE(4), 'WRITE error').toBe(0);
  expect(reply.readBigUInt64BE(8)).toBe(cookie);
}

async function readAt(c: Client, offset: number, length: number, cookie: bigint): Promise<Buffer> {
  c.s.write(encodeRequest(0, Cmd.READ, cookie, offset, length));
  const reply = await c.reader.readExact(16);
  expect(reply.readUInt32BE(4), 'READ error').toBe(0);
  expect(reply.readBigUInt64BE(8)).toBe(cookie);
  return Buffer.from(await c.reader.readExact(length));
}

function lastConnectLine(): string {
  return [...lines].reverse().find((l) => l.includes('client connected')) ?? '';
}

beforeAll(async () => {
  if (missing.length > 0) return;
  const fx = await makeTlsFixture(tempDir('rebound-tls-offload-'), []);
  caCert = fs.readFileSync(path.join(fx.serverDir, 'ca-cert.pem'), 'utf8'); // the CA that signed the server
  const nbdTls = new NbdTls({ mode: 'require', certs: await loadCertDir(fx.serverDir) });
  nbd = await startNbd([{ name: 'disk', device: new MemoryDevice(SIZE) }], { tls: nbdTls, log: createLogger({ write: (l) => lines.push(l) }) });
}, 60_000);
afterAll(async () => {
  await nbd?.close();
});

describe.skipIf(missing.length > 0)('NBD over TLS: the record layer after the handshake', () => {
  it('the native addon is built (tools/build-native.sh)', () => {
    expect(tlsRecordFunctions()).toBeDefined();
  });

  const suites = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'];
  suites.forEach((suite, i) => {
    it(`${suite}: a 3 MiB WRITE and READ come back intact on rebound's records`, async () => {
      const c = await connect({ minVersion: 'TLSv1.3', ciphers: suite });
      try {
        const data = crypto.randomBytes(3 * 1024 * 1024 + 513);
        const at = i * 4 * 1024 * 1024 + 512;
        await writeAt(c, at, data, 1n);
        expect((await readAt(c, at, data.length, 2n)).equals(data)).toBe(true);
        expect(lastConnectLine()).toMatch(new RegExp(`cipher=${suite}.*records=rebound`));
      } finally {
        c.s.destroy();
      }
    });
  });

  it('TLS 1.2 stays on Node\'s TLS socket and is served', async () => {
    const c = await connect({ maxVersion: 'TLSv1.2' });
    try {
      const data = crypto.randomBytes(200_000);
      await writeAt(c, 12 * 1024 * 1024, data, 3n);
      expect((await readAt(c, 12 * 1024 * 1024, data.length, 4n)).equals(data)).toBe(true);
      expect(lastConnectLine()).toMatch(/tls=TLSv1\.2 .*records=node/);
    } finally {
      c.s.destroy();
    }
  });

  it('a READ sent behind GO in the same record is answered (the connection stays on Node\'s TLS socket)', async () => {
    const c = await connect({ minVersion: 'TLSv1.3' }, encodeRequest(0, Cmd.READ, 9n, 0, 4096));
    try {
      const reply = await c.reader.readExact(16 + 4096);
      expect(reply.readUInt32BE(4)).toBe(0);
      expect(reply.readBigUInt64BE(8)).toBe(9n);
      expect(lastConnectLine()).toMatch(/records=node/);
    } finally {
      c.s.destroy();
    }
  });

  it('plain-text bytes after the handshake close that connection, and others go on', async () => {
    const bad = await connect({ minVersion: 'TLSv1.3' });
    await readAt(bad, 0, 512, 4n);
    expect(lastConnectLine()).toMatch(/records=rebound/);
    const closed = new Promise<void>((resolve) => bad.raw.once('close', () => resolve()));
    bad.raw.write(encodeRequest(0, Cmd.READ, 1n, 0, 512)); // not inside a TLS record
    await closed;
    const good = await connect({ minVersion: 'TLSv1.3' });
    try {
      expect((await readAt(good, 0, 512, 5n)).length).toBe(512);
    } finally {
      good.s.destroy();
    }
  });
});
