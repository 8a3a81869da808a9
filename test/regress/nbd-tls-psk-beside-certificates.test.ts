/**
 * Regress: TLS-PSK next to x509 credentials and client-certificate checks (found with qemu/libnbd):
 *  - with a certificate configured, a TLS 1.3 handshake that picked TLS_AES_256_GCM_SHA384 (GnuTLS
 *    and Node clients list it first) dropped the PSK, which OpenSSL ties to SHA-256, and sent the
 *    certificate: a PSK-only client failed with "Insufficient credentials";
 *  - with --tls-verify-peer, a PSK handshake failed with "session id context uninitialized";
 *  - a TLSSocket made for STARTTLS never sets `authorized` (only tls.Server's listener does), so
 *    every verified client certificate was refused as "not trusted".
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { Catalog } from '../../src/exports/catalog.js';
import { ByteReader } from '../../src/nbd/byte-reader.js';
import { encodeGoData, encodeOption, encodeRequest } from '../../src/nbd/messages.js';
import { Cmd, Opt, Rep } from '../../src/nbd/protocol.js';
import { NbdServer } from '../../src/nbd/server.js';
import { AccessPolicy } from '../../src/tls/access.js';
import { loadCertDir } from '../../src/tls/cert-dir.js';
import { NbdTls } from '../../src/tls/nbd-tls.js';
import { loadPskFile } from '../../src/tls/psk-file.js';
import { createLogger } from '../../src/util/log.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { makeTlsFixture, type TlsFixture } from '../helpers/tls-certs.js';

const missing = missingPeers('openssl');
let root: string;
let fx: TlsFixture;
let catalog: Catalog;
let server: NbdServer;
let port: number;
const lines: string[] = [];

/**
 * Plain-text greeting and STARTTLS, then TLS with `opts`; resolves with GO's final reply type. After
 * an ACK it also reads 512 bytes, so the server has logged the connection when this resolves.
 */
async function goOverTls(opts: tls.ConnectionOptions): Promise<number> {
  const raw = net.connect(port, '127.0.0.1');
  raw.on('error', () => undefined);
  let reader = new ByteReader(raw);
  await reader.readExact(18);
  raw.write(Buffer.from([0, 0, 0, 3]));
  raw.write(encodeOption(Opt.STARTTLS));
  const ack = await reader.readExact(20);
  expect(ack.readUInt32BE(12)).toBe(Rep.ACK);
  const s = tls.connect({ socket: raw, servername: 'localhost', ...opts });
  s.on('error', () => undefined);
  reader = new ByteReader(s);
  try {
    s.write(encodeOption(Opt.GO, encodeGoData('disk')));
    for (;;) {
      const head = await reader.readExact(20);
      await reader.readExact(head.readUInt32BE(16));
      const type = head.readUInt32BE(12);
      if (type >= 0x80000000) return type;
      if (type === Rep.ACK) {
        s.write(encodeRequest(0, Cmd.READ, 7n, 0, 512));
        const reply = await reader.readExact(16 + 512);
        expect(reply.readUInt32BE(4)).toBe(0); // no error
        return type;
      }
    }
  } finally {
    s.destroy();
  }
}

beforeAll(async () => {
  if (missing.length > 0) return;
  root = tempDir('rebound-tls-regress-');
  fx = await makeTlsFixture(root, ['alice']);
  catalog = new Catalog();
  const dev = new MemoryDevice(1024 * 1024);
  catalog.publish({ name: 'disk', kind: 'adhoc', disk: 'disk', size: dev.size, capabilities: dev.capabilities(), publish: ['nbd'], device: dev });
  const nbdTls = new NbdTls({ mode: 'require', certs: await loadCertDir(fx.serverDir), psk: await loadPskFile(fx.pskFile), verifyPeer: true });
  server = new NbdServer({ exports: catalog.view('nbd'), tls: nbdTls, access: new AccessPolicy({ enabled: false }), log: createLogger({ write: (l) => lines.push(l) }) });
  const a = await server.listenTcp('127.0.0.1', 0);
  port = a.kind === 'tcp' ? a.port : 0;
}, 60_000);
afterAll(async () => {
  await server?.close(1000);
  await catalog?.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

describe.skipIf(missing.length > 0)('TLS-PSK beside certificates, with --tls-verify-peer', () => {
  it('a PSK client that prefers TLS_AES_256_GCM_SHA384 still gets PSK, not the certificate', async () => {
    const type = await goOverTls({
      ciphers: 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256',
      pskCallback: () => ({ psk: Buffer.from(fx.pskKeys.alice!, 'hex'), identity: 'alice' }),
      checkServerIdentity: () => undefined,
    });
    expect(type).toBe(Rep.ACK);
    expect(lines.join('\n')).toMatch(/client connected .*identity=psk:alice/);
  });

  it('a client certificate signed by ca-cert.pem is accepted as its subject', async () => {
    const d = fx.clientDir('alice');
    const type = await goOverTls({
      ca: fs.readFileSync(path.join(d, 'ca-cert.pem')),
      cert: fs.readFileSync(path.join(d, 'client-cert.pem')),
      key: fs.readFileSync(path.join(d, 'client-key.pem')),
    });
    expect(type).toBe(Rep.ACK);
    expect(lines.join('\n')).toMatch(/client connected .*identity="x509:CN=alice,O=Rebound Test"/);
  });
});
