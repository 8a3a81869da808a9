/**
 * Regress (a known class of STARTTLS bugs, cf. nbdkit CVE-2021-3716 and SMTP STARTTLS injection):
 * plain-text bytes a client (or a man in the middle) sends behind NBD_OPT_STARTTLS, before the
 * server's ACK, must never be read as if they had come through TLS. The server drops the
 * connection instead of acknowledging STARTTLS.
 */
import fs from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { ByteReader } from '../../src/nbd/byte-reader.js';
import { Catalog } from '../../src/exports/catalog.js';
import { encodeGoData, encodeOption } from '../../src/nbd/messages.js';
import { Opt } from '../../src/nbd/protocol.js';
import { NbdServer } from '../../src/nbd/server.js';
import { loadPskFile } from '../../src/tls/psk-file.js';
import { NbdTls } from '../../src/tls/nbd-tls.js';
import { createLogger } from '../../src/util/log.js';
import { tempDir } from '../helpers/images.js';

let dir: string;
let catalog: Catalog;
let server: NbdServer;
let port: number;
const lines: string[] = [];

beforeAll(async () => {
  dir = tempDir('rebound-starttls-');
  fs.writeFileSync(`${dir}/keys.psk`, `alice:${'11'.repeat(32)}\n`, { mode: 0o600 });
  catalog = new Catalog();
  const dev = new MemoryDevice(1024 * 1024);
  catalog.publish({ name: 'disk', kind: 'adhoc', disk: 'disk', size: dev.size, capabilities: dev.capabilities(), publish: ['nbd'], device: dev });
  const nbdTls = new NbdTls({ mode: 'on', psk: await loadPskFile(`${dir}/keys.psk`) });
  server = new NbdServer({ exports: catalog.view('nbd'), tls: nbdTls, log: createLogger({ write: (l) => lines.push(l) }) });
  const a = await server.listenTcp('127.0.0.1', 0);
  port = a.kind === 'tcp' ? a.port : 0;
});
afterAll(async () => {
  await server.close(1000);
  await catalog.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('STARTTLS with plain text behind it', () => {
  it('closes the connection without acknowledging STARTTLS', async () => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    const received: Buffer[] = [];
    s.on('data', (d: Buffer) => received.push(d));
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    await new Promise<void>((r) => s.once('connect', () => r()));
    // Client flags, STARTTLS and, in the same packet, a plain-text GO that must not be obeyed.
    s.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), encodeOption(Opt.STARTTLS), encodeOption(Opt.GO, encodeGoData('disk'))]));
    await closed;
    const all = Buffer.concat(received);
    expect(all.length).toBe(18); // the greeting, and nothing after it: no ACK, no GO reply
    expect(lines.join('\n')).toMatch(/protocol violation; closing connection .*plain-text data behind NBD_OPT_STARTTLS/);
  });

  it('the same client without the smuggled bytes is served in plain text (--tls on, no rules)', async () => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    const reader = new ByteReader(s);
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), encodeOption(Opt.GO, encodeGoData('disk'))]));
    // Greeting (18), INFO_EXPORT reply (20 + 12), ACK (20).
    const all = await reader.readExact(70);
    expect(all.readUInt32BE(18 + 12)).toBe(3); // NBD_REP_INFO
    expect(all.readUInt32BE(18 + 32 + 12)).toBe(1); // NBD_REP_ACK
    s.destroy();
  });
});
