/**
 * NBD over TLS with real clients: qemu-img/qemu-io (tls-creds-x509, tls-creds-psk), nbdinfo and
 * nbdcopy (nbds:// URIs with tls-certificates= / tls-psk-file=), and a byte-level client where the
 * protocol itself is the point (TLS_REQD, a second STARTTLS, a write on a read-only grant, plain
 * text smuggled behind STARTTLS). Credentials come from the real `openssl` (helpers/tls-certs.ts).
 *
 * The in-process server runs in `require` mode with x509 (client certificates verified) and PSK at
 * once, and these access rules:
 *   CN=alice      alpha, beta   read-write      (x509)
 *   bob           alpha         read-only       (PSK)
 *   gamma         nobody by rule; its entry's allow list admits CN=bob
 * Then a daemon with a backed-up VM: `recover --allow CN=alice` and qemu-io reads and writes the
 * session's disk over TLS; another identity sees nothing of it. Last, QEMU (TCG) boots the test
 * guest from a recovery session over TLS with alice's certificate, and the guest writes.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { defaultConfig, validateConfig } from '../../src/config/schema.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { Catalog } from '../../src/exports/catalog.js';
import { ByteReader } from '../../src/nbd/byte-reader.js';
import { encodeGoData, encodeOption, encodeRequest } from '../../src/nbd/messages.js';
import { Cmd, NbdErrno, Opt, Rep, TFlag } from '../../src/nbd/protocol.js';
import { NbdServer } from '../../src/nbd/server.js';
import { AccessPolicy, parseAccessRule } from '../../src/tls/access.js';
import { loadCertDir } from '../../src/tls/cert-dir.js';
import { NbdTls } from '../../src/tls/nbd-tls.js';
import { loadPskFile } from '../../src/tls/psk-file.js';
import { createLogger } from '../../src/util/log.js';
import { cli } from '../helpers/cli.js';
import { bootGuest, describeBoot, ensureGuest, explainBoot, killAllGuests, missingGuestPeers, newMarker } from '../helpers/guest.js';
import { patternBuffer, tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';
import { makeTlsFixture, type TlsFixture } from '../helpers/tls-certs.js';

const missing = missingPeers('openssl', 'qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy');
const MiB = 1024 * 1024;

let root: string;
let fx: TlsFixture;
let catalog: Catalog;
let server: NbdServer;
let port: number;
const logLines: string[] = [];

/** A byte-level NBD client that can switch to TLS after STARTTLS. */
class RawTlsClient {
  socket: net.Socket;
  #reader: ByteReader;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#reader = new ByteReader(socket);
    this.closed = new Promise((r) => socket.once('close', () => r()));
    socket.on('error', () => undefined);
  }

  static connect(p: number): Promise<RawTlsClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(p, '127.0.0.1');
      s.once('connect', () => resolve(new RawTlsClient(s)));
      s.once('error', reject);
    });
  }

  read(n: number): Promise<Buffer> {
    return this.#reader.readExact(n);
  }

  async greet(): Promise<void> {
    await this.read(18);
    this.socket.write(Buffer.from([0, 0, 0, 3]));
  }

  async option(option: number, data: Buffer = Buffer.alloc(0)): Promise<Array<{ type: number; data: Buffer }>> {
    this.socket.write(encodeOption(option, data));
    const out: Array<{ type: number; data: Buffer }> = [];
    for (;;) {
      const head = await this.read(20);
      const r = { type: head.readUInt32BE(12), data: await this.read(head.readUInt32BE(16)) };
      out.push(r);
      if (r.type === Rep.ACK || r.type >= 0x80000000) return out;
    }
  }

  /** STARTTLS, then the TLS handshake on this connection. */
  async startTls(opts: tls.ConnectionOptions): Promise<void> {
    const [r] = await this.option(Opt.STARTTLS);
    if (r!.type !== Rep.ACK) throw new Error(`STARTTLS answered 0x${r!.type.toString(16)}`);
    const s = tls.connect({ socket: this.socket, servername: 'localhost', ...opts });
    s.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', () => resolve());
      s.once('error', reject);
      s.once('close', () => reject(new Error('closed during the TLS handshake')));
    });
    this.socket = s;
    this.#reader = new ByteReader(s);
  }

  close(): void {
    this.socket.destroy();
  }
}

const x509As = (name: string): tls.ConnectionOptions => ({
  ca: fs.readFileSync(path.join(fx.clientDir(name), 'ca-cert.pem')),
  cert: fs.readFileSync(path.join(fx.clientDir(name), 'client-cert.pem')),
  key: fs.readFileSync(path.join(fx.clientDir(name), 'client-key.pem')),
});
const pskAs = (user: string, hex = fx.pskKeys[user]!): tls.ConnectionOptions => ({
  pskCallback: () => ({ psk: Buffer.from(hex, 'hex'), identity: user }),
  checkServerIdentity: () => undefined,
  ciphers: 'TLS_AES_128_GCM_SHA256',
});

const uriX509 = (exp: string, client: string, p = port): string => `nbds://127.0.0.1:${p}/${exp}?tls-certificates=${fx.clientDir(client)}`;
const uriPsk = (exp: string, user: string, dir = user, p = port): string =>
  `nbds://${user}@127.0.0.1:${p}/${exp}?tls-psk-file=${path.join(fx.pskDir(dir), 'keys.psk')}`;
const qemuX509 = (client: string): string => `tls-creds-x509,id=tls0,dir=${fx.clientDir(client)},endpoint=client`;
const qemuPsk = (user: string, dir = user): string => `tls-creds-psk,id=tls0,dir=${fx.pskDir(dir)},username=${user},endpoint=client`;
const nbdOpts = (exp: string, p = port): string => `driver=nbd,host=127.0.0.1,port=${p},export=${exp},tls-creds=tls0`;

async function nbdinfoJson(uri: string): Promise<{ exports: Array<{ 'export-name': string; is_read_only: boolean; 'export-size': number }>; protocol: string; TLS: boolean }> {
  const r = await runOk('nbdinfo', ['--json', uri]);
  return JSON.parse(r.stdout);
}

beforeAll(async () => {
  if (missing.length > 0) return;
  root = tempDir('rebound-tls-');
  fx = await makeTlsFixture(path.join(root, 'creds'), ['alice', 'bob']);
  const log = createLogger({ level: 'debug', write: (l) => logLines.push(l) });
  catalog = new Catalog(log);
  for (const name of ['alpha', 'beta', 'gamma']) {
    const device = new MemoryDevice(8 * MiB);
    catalog.publish({
      name,
      kind: 'adhoc',
      disk: name,
      size: device.size,
      capabilities: device.capabilities(),
      publish: ['nbd'],
      device,
      ...(name === 'gamma' ? { allow: ['CN=bob'] } : {}),
    });
  }
  const nbdTls = new NbdTls({
    mode: 'require',
    certs: await loadCertDir(fx.serverDir, { requireCa: true }),
    psk: await loadPskFile(fx.pskFile),
    verifyPeer: true,
  });
  const rules = ['CN=alice:alpha,beta', 'bob:alpha:ro'].map(parseAccessRule);
  server = new NbdServer({ exports: catalog.view('nbd'), log, handshakeTimeoutMs: 3000, tls: nbdTls, access: new AccessPolicy({ enabled: true, rules }) });
  const a = await server.listenTcp('127.0.0.1', 0);
  port = a.kind === 'tcp' ? a.port : 0;
}, 60_000);

afterAll(async () => {
  await server?.close(2000);
  await catalog?.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

const logSince = (n: number): string => logLines.slice(n).join('\n');

describe.skipIf(missing.length > 0)('NBD TLS (require; x509 with client certificates, and PSK)', () => {
  it('qemu-io writes and reads back over x509 TLS; qemu-img info sees the export', async () => {
    const r = await runOk('qemu-io', ['--object', qemuX509('alice'), '--image-opts', nbdOpts('alpha'), '-c', 'write -P 0x5a 1M 256k', '-c', 'read -P 0x5a 1M 256k', '-c', 'flush']);
    expect(r.stdout).not.toContain('Pattern verification failed');
    expect(r.stdout).toContain('read 262144/262144 bytes at offset 1048576');
    const info = await runOk('qemu-img', ['info', '--output=json', '--object', qemuX509('alice'), '--image-opts', nbdOpts('alpha')]);
    expect(JSON.parse(info.stdout)['virtual-size']).toBe(8 * MiB);
  });

  it('qemu-io reads over TLS-PSK; the read-only grant keeps it from opening the export for writing', async () => {
    const r = await runOk('qemu-io', ['-r', '--object', qemuPsk('bob'), '--image-opts', nbdOpts('alpha'), '-c', 'read -P 0x5a 1M 256k']);
    expect(r.stdout).not.toContain('Pattern verification failed');
    const w = await run('qemu-io', ['--object', qemuPsk('bob'), '--image-opts', nbdOpts('alpha'), '-c', 'write 0 4k']);
    expect(w.stdout + w.stderr).toMatch(/Permission denied|read-only/i);
    expect(w.stdout).not.toMatch(/wrote 4096/);
  });

  it('nbdinfo over nbds:// with certificates and with a PSK file: TLS, read-write for alice, read-only for bob', async () => {
    const a = await nbdinfoJson(uriX509('alpha', 'alice'));
    expect(a.TLS).toBe(true);
    expect(a.exports[0]!.is_read_only).toBe(false);
    const b = await nbdinfoJson(uriPsk('alpha', 'bob'));
    expect(b.TLS).toBe(true);
    expect(b.exports[0]!.is_read_only).toBe(true);
    const list = await runOk('nbdinfo', ['--list', '--json', uriX509('', 'alice')]);
    expect((JSON.parse(list.stdout) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']).sort()).toEqual(['alpha', 'beta']);
  });

  it('nbdcopy copies a whole export over TLS (4 connections), byte for byte', async () => {
    const data = patternBuffer(0, 8 * MiB, 7);
    const src = path.join(root, 'src.raw');
    fs.writeFileSync(src, data);
    await runOk('nbdcopy', [src, uriX509('beta', 'alice')]);
    const out = path.join(root, 'out.raw');
    await runOk('nbdcopy', [uriX509('beta', 'alice'), out]);
    expect(fs.readFileSync(out).equals(data)).toBe(true);
  });

  it('an identity without access: the export is absent (LIST, INFO/GO answer ERR_UNKNOWN), and the refusal is logged', async () => {
    const n = logLines.length;
    const r = await run('nbdinfo', ['--json', uriPsk('beta', 'bob')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/No such file|unknown|not found/i);
    const list = await runOk('nbdinfo', ['--list', '--json', uriPsk('', 'bob')]);
    expect((JSON.parse(list.stdout) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']).sort()).toEqual(['alpha']);
    expect(logSince(n)).toMatch(/NBD export refused: the client identity has no access to it .*identity=psk:bob export=beta/);
    // The entry's own allow list (a session's --allow) admits CN=bob's certificate (not the PSK user bob), read-write.
    const g = await nbdinfoJson(uriX509('gamma', 'bob'));
    expect(g.exports[0]!.is_read_only).toBe(false);
    expect((await run('nbdinfo', [uriX509('gamma', 'alice')])).code).not.toBe(0);
  });

  it('a plain-text client gets nothing in require mode: no LIST, no export, EXPORT_NAME closes', async () => {
    const r = await run('nbdinfo', [`nbd://127.0.0.1:${port}/alpha`]);
    expect(r.code).not.toBe(0);
    const l = await run('nbdinfo', ['--list', `nbd://127.0.0.1:${port}/`]);
    expect(l.code).not.toBe(0);
    expect(l.stdout).not.toContain('alpha');
    const c = await RawTlsClient.connect(port);
    await c.greet();
    for (const [opt, data] of [[Opt.LIST, Buffer.alloc(0)], [Opt.GO, encodeGoData('alpha')], [Opt.INFO, encodeGoData('alpha')], [Opt.STRUCTURED_REPLY, Buffer.alloc(0)]] as const) {
      const replies = await c.option(opt, data);
      expect(replies.map((x) => x.type)).toEqual([Rep.ERR_TLS_REQD]);
    }
    c.socket.write(encodeOption(Opt.EXPORT_NAME, Buffer.from('alpha')));
    await c.closed;
  });

  it('a client certificate from another CA, no certificate, a wrong PSK or an unknown PSK user: refused, each logged', async () => {
    const n = logLines.length;
    expect((await run('nbdinfo', [uriX509('alpha', 'rogue')])).code).not.toBe(0);
    const noCert = path.join(root, 'ca-only');
    fs.mkdirSync(noCert, { recursive: true });
    fs.copyFileSync(path.join(fx.serverDir, 'ca-cert.pem'), path.join(noCert, 'ca-cert.pem'));
    expect((await run('nbdinfo', [`nbds://127.0.0.1:${port}/alpha?tls-certificates=${noCert}`])).code).not.toBe(0);
    expect((await run('nbdinfo', [uriPsk('alpha', 'alice', 'wrong')])).code).not.toBe(0);
    const q = await run('qemu-img', ['info', '--object', qemuPsk('alice', 'wrong'), '--image-opts', nbdOpts('alpha')]);
    expect(q.code).not.toBe(0);
    // GnuTLS will not send a user its file lacks, so the unknown user comes from a Node client.
    const c = await RawTlsClient.connect(port);
    await c.greet();
    await expect(c.startTls(pskAs('mallory', 'aa'.repeat(32)))).rejects.toThrow();
    // A certificate from the other CA, presented by a client that does not care whom it asks.
    const d = await RawTlsClient.connect(port);
    await d.greet();
    await d.startTls({ ...x509As('rogue'), rejectUnauthorized: false }).catch(() => undefined);
    await d.closed;
    const log = logSince(n);
    expect(log).toMatch(/TLS client refused .*reason="the client sent no certificate"/);
    expect(log).toMatch(/TLS client refused .*reason="client certificate not trusted: [A-Z_]+" subject="CN=alice,O=Rebound Test" issuer="CN=Somebody Else CA/);
    expect(log).toMatch(/TLS client refused .*wrong PSK key/);
    expect(log).toMatch(/TLS client refused .*reason="unknown PSK username 'mallory'"/);
    expect(log).not.toMatch(/client connected/);
  });

  it('over TLS: a second STARTTLS is ERR_INVALID; a write on a read-only grant is EPERM even when the client ignores the flag', async () => {
    const c = await RawTlsClient.connect(port);
    await c.greet();
    await c.startTls(pskAs('bob'));
    expect((await c.option(Opt.STARTTLS)).map((r) => r.type)).toEqual([Rep.ERR_INVALID]);
    const replies = await c.option(Opt.GO, encodeGoData('alpha'));
    expect(replies.at(-1)!.type).toBe(Rep.ACK);
    const flags = replies.find((r) => r.type === Rep.INFO && r.data.readUInt16BE(0) === 0)!.data.readUInt16BE(10);
    expect(flags & TFlag.READ_ONLY).toBeTruthy();
    c.socket.write(Buffer.concat([encodeRequest(0, Cmd.WRITE, 9n, 0, 4096), Buffer.alloc(4096, 1)]));
    const reply = await c.read(16);
    expect(reply.readUInt32BE(0)).toBe(0x67446698);
    expect(reply.readUInt32BE(4)).toBe(NbdErrno.EPERM);
    expect(reply.readBigUInt64BE(8)).toBe(9n);
    c.close();
  });

  it('the handshake timeout covers the TLS handshake: a client silent after the STARTTLS ACK is dropped', async () => {
    const n = logLines.length;
    const c = await RawTlsClient.connect(port);
    await c.greet();
    expect((await c.option(Opt.STARTTLS)).map((r) => r.type)).toEqual([Rep.ACK]);
    await c.closed; // handshakeTimeoutMs is 3 s; the test's own timeout is the safety net
    expect(logSince(n)).toMatch(/handshake timed out; closing/);
  }, 20_000);
});

describe.skipIf(missing.length > 0)('NBD TLS: STARTTLS without TLS, and the daemon with a recovery session', () => {
  it('a server without TLS answers STARTTLS with ERR_POLICY and carries on in plain text', async () => {
    const cat = new Catalog();
    const dev = new MemoryDevice(MiB);
    cat.publish({ name: 'p', kind: 'adhoc', disk: 'p', size: dev.size, capabilities: dev.capabilities(), publish: ['nbd'], device: dev });
    const plain = new NbdServer({ exports: cat.view('nbd') });
    const a = await plain.listenTcp('127.0.0.1', 0);
    try {
      const c = await RawTlsClient.connect(a.kind === 'tcp' ? a.port : 0);
      await c.greet();
      expect((await c.option(Opt.STARTTLS)).map((r) => r.type)).toEqual([Rep.ERR_POLICY]);
      expect((await c.option(Opt.LIST)).map((r) => r.type)).toEqual([Rep.SERVER, Rep.ACK]);
      c.close();
    } finally {
      await plain.close(1000);
      await cat.close();
    }
  });

  it('recover --allow CN=alice: qemu-io reads and writes the session disk over TLS; bob sees none of it; plain text is refused', async () => {
    const dir = path.join(root, 'daemon');
    fs.mkdirSync(dir);
    const image = patternBuffer(0, 16 * MiB, 3);
    fs.writeFileSync(path.join(dir, 'src.img'), image);
    const config = validateConfig({
      ...defaultConfig({}),
      sourceDirs: [os.tmpdir()],
      targetDirs: [os.tmpdir()],
      dataDir: path.join(dir, 'data'),
      nbd: ['127.0.0.1:0'],
      http: '127.0.0.1:0',
      chunkSize: 256 * 1024,
      nbdTls: 'require',
      tlsCertDir: fx.serverDir,
      tlsVerifyPeer: true,
      tlsPskFile: fx.pskFile,
      nbdAccess: ['bob:vm1@*:ro'], // restore points of vm1 only: 'vm1' would match its sessions too
    });
    const lines: string[] = [];
    const daemon = await Daemon.start(config, createLogger({ write: (l) => lines.push(l) }));
    try {
      const rb = (...args: string[]) => cli(['--server', `http://${daemon.endpoints.http}`, '--data', daemon.config.dataDir, ...args]);
      let r = await rb('backup', 'vm1', '--disk', `disk0=${path.join(dir, 'src.img')}`);
      expect(r.code, r.stderr).toBe(0);
      r = await rb('recover', 'vm1', '--name', 'web', '--allow', 'CN=alice', '--json');
      expect(r.code, r.stderr).toBe(0);
      const dport = Number(daemon.endpoints.nbd[0]!.split(':').at(-1));
      const exp = 'session/web/disk0';
      // The connection lines recover prints are TLS lines, and QEMU takes them as printed (with
      // the client's certificate directory in place of the default /etc/pki/qemu).
      const connect = (JSON.parse(r.stdout) as { connect: { disks: Array<{ nbdUri: string; qemuBlockdev: string; libvirt: string }> } }).connect.disks[0]!;
      expect(connect.nbdUri).toBe(`nbds://127.0.0.1:${dport}/${exp}`);
      expect(connect.libvirt).toContain(`<source protocol='nbd' name='${exp}' tls='yes'>`);
      const printed = /^-object (\S+) -blockdev (\S+) -device /.exec(connect.qemuBlockdev);
      expect(printed, connect.qemuBlockdev).not.toBeNull();
      const aliceDir = fx.clientDir('alice');
      const object = printed![1]!.replace('dir=/etc/pki/qemu', `dir=${aliceDir}`);
      const blockdev = printed![2]!.replace(/,node-name=[^,]+/, '');
      const viaPrinted = await runOk('qemu-io', ['--object', object, '--image-opts', blockdev, '-c', 'read 0 4k']);
      expect(viaPrinted.stdout).toContain('read 4096/4096 bytes at offset 0');
      const w = await runOk('qemu-io', ['--object', qemuX509('alice'), '--image-opts', nbdOpts(exp, dport),
        '-c', 'write -P 0xee 9M 64k', '-c', 'read -P 0xee 9M 64k', '-c', 'flush']);
      expect(w.stdout).not.toContain('Pattern verification failed');
      expect(w.stdout).toContain('wrote 65536/65536 bytes at offset 9437184');
      // Data from the restore point arrives intact through TLS.
      const out = path.join(dir, 'head.raw');
      await runOk('qemu-img', ['convert', '-O', 'raw', '--object', qemuX509('alice'), '--image-opts', nbdOpts(exp, dport), out]);
      const got = fs.readFileSync(out);
      expect(got.subarray(0, 9 * MiB).equals(image.subarray(0, 9 * MiB))).toBe(true);
      expect(got.subarray(9 * MiB, 9 * MiB + 65536).equals(Buffer.alloc(65536, 0xee))).toBe(true);
      // bob (PSK) may read vm1's restore points (vm1@latest included) but not alice's session.
      const bobList = await runOk('nbdinfo', ['--list', '--json', uriPsk('', 'bob', 'bob', dport)]);
      const names = (JSON.parse(bobList.stdout) as { exports: Array<{ 'export-name': string; is_read_only: boolean }> }).exports;
      expect(names.length).toBeGreaterThan(0);
      expect(names.every((e) => e['export-name'].startsWith('vm1@') && e.is_read_only), JSON.stringify(names)).toBe(true);
      expect((await run('nbdinfo', [uriPsk(exp, 'bob', 'bob', dport)])).code).not.toBe(0);
      expect((await run('nbdinfo', [`nbd://127.0.0.1:${dport}/${encodeURIComponent(exp)}`])).code).not.toBe(0);
      expect(lines.join('\n')).toMatch(/NBD TLS enabled .*mode=require/);
      expect(lines.join('\n')).toMatch(/client connected .*export=session\/web\/disk0 .*tls=TLSv1\.3 cipher=TLS_AES_128_GCM_SHA256 identity="x509:CN=alice,O=Rebound Test"/);
    } finally {
      await daemon.close();
    }
  }, 120_000);

  it('the daemon refuses to start with TLS credentials it cannot use', async () => {
    const bad = path.join(root, 'bad-certs');
    fs.cpSync(fx.serverDir, bad, { recursive: true });
    fs.copyFileSync(path.join(fx.clientDir('alice'), 'client-key.pem'), path.join(bad, 'server-key.pem'));
    const base = { ...defaultConfig({}), dataDir: path.join(root, 'data-bad'), nbd: ['127.0.0.1:0'], http: 'off' };
    await expect(Daemon.start(validateConfig({ ...base, nbdTls: 'require', tlsCertDir: bad }), createLogger({ level: 'silent' }))).rejects.toMatchObject({
      code: 'ERR_TLS_CREDENTIALS',
      message: expect.stringMatching(/server-key\.pem does not match/),
    });
    await expect(Daemon.start(validateConfig({ ...base, nbdTls: 'on' }), createLogger({ level: 'silent' }))).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/needs --tls-certificates DIR or --tls-psk FILE/),
    });
  });
});

const bootMissing = [...missing, ...missingGuestPeers()];

describe.skipIf(bootMissing.length > 0)('NBD TLS: QEMU boots a recovered guest over TLS', () => {
  afterAll(() => killAllGuests());

  it('recover --allow CN=alice; QEMU with tls-creds-x509 boots the session disk, the guest writes, the write is in the session', async () => {
    const guest = await ensureGuest();
    const dir = path.join(root, 'boot');
    fs.mkdirSync(dir);
    const config = validateConfig({
      ...defaultConfig({}),
      sourceDirs: [path.dirname(guest.disk)],
      dataDir: path.join(dir, 'data'),
      nbd: ['127.0.0.1:0'],
      http: '127.0.0.1:0',
      nbdTls: 'require',
      tlsCertDir: fx.serverDir,
      tlsVerifyPeer: true,
      nbdAccess: ['CN=bob:*'],
    });
    const daemon = await Daemon.start(config, createLogger({ level: 'silent' }));
    try {
      const rb = (...args: string[]) => cli(['--server', `http://${daemon.endpoints.http}`, '--data', daemon.config.dataDir, ...args]);
      let r = await rb('backup', 'guest', '--disk', `disk0=${guest.disk}`);
      expect(r.code, r.stderr).toBe(0);
      r = await rb('recover', 'guest', '--name', 'g1', '--allow', 'CN=alice');
      expect(r.code, r.stderr).toBe(0);
      const dport = daemon.endpoints.nbd[0]!.split(':').at(-1)!;
      // startGuest adds format=raw: the json: filename describes the protocol node below it.
      const drive = 'json:' + JSON.stringify({ file: { driver: 'nbd', host: '127.0.0.1', port: dport, export: 'session/g1/disk0', 'tls-creds': 'tls0' } });
      const marker = newMarker('tlsboot');
      const boot = await bootGuest({ drive, action: `write:${marker}`, timeoutMs: 150_000, guest, qemuArgs: ['-object', qemuX509('alice')] });
      console.log(`nbd-tls boot (write): ${describeBoot(boot)}`);
      expect(boot.timedOut, explainBoot(boot)).toBe(false);
      expect(boot.ioErrors, explainBoot(boot)).toEqual([]);
      expect(boot.status, explainBoot(boot)).toBe('ok');
      expect(boot.fields['marker.written']).toBe(marker);
      // The guest's writes went to the session, not the restore point.
      const s = await runOk('qemu-img', ['compare', '--object', qemuX509('bob'), '--image-opts', nbdOpts('guest@latest/disk0', Number(dport)), `driver=file,filename=${guest.disk}`]);
      expect(s.stdout).toContain('Images are identical');
      const d = await run('qemu-img', ['compare', '--object', qemuX509('alice'), '--image-opts', nbdOpts('session/g1/disk0', Number(dport)), `driver=file,filename=${guest.disk}`]);
      expect(d.stdout).toContain('Content mismatch');
    } finally {
      await daemon.close();
    }
  }, 400_000);
});
