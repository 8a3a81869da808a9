/**
 * TLS 1.3 records after the handshake (tls/record-stream.ts, tls/tls13-keys.ts, the native addon's
 * tlsSeal/tlsOpen): what one side seals the other opens, however the bytes are cut on the way;
 * KeyUpdate, close_notify, and records that must fail the stream. The same code against real
 * TLS peers (Node's TLS client, qemu, libnbd) is in test/regress/tls-record-offload.test.ts and
 * test/interop/nbd-tls.test.ts.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { tlsRecordFunctions, type TlsRecordFunctions } from '../../../src/native/tls-record.js';
import { TlsRecordError, TlsRecordStream } from '../../../src/tls/record-stream.js';
import { hkdfExpandLabel, tls13Suite, TrafficKeys } from '../../../src/tls/tls13-keys.js';

const fns = tlsRecordFunctions();

/** A socket stand-in: what the stream writes is kept, what the test pushes is "received". */
class Wire extends Duplex {
  readonly sent: Buffer[] = [];
  override _write(chunk: Buffer, _e: BufferEncoding, done: () => void): void {
    this.sent.push(chunk);
    done();
  }
  override _read(): void {}
  drain(): Buffer {
    return Buffer.concat(this.sent.splice(0));
  }
}

/** Two ends of one connection with fresh secrets: `a` seals what `b` opens and the other way round. */
function pair(f: TlsRecordFunctions, suiteName = 'TLS_AES_128_GCM_SHA256') {
  const suite = tls13Suite(suiteName)!;
  const s1 = crypto.randomBytes(suite.hash === 'sha256' ? 32 : 48);
  const s2 = crypto.randomBytes(s1.length);
  const wa = new Wire();
  const wb = new Wire();
  const a = new TlsRecordStream(wa, { tx: new TrafficKeys(f, suite, s1, { seal: true }), rx: new TrafficKeys(f, suite, s2, { seal: false }), pending: Buffer.alloc(0) });
  const b = new TlsRecordStream(wb, { tx: new TrafficKeys(f, suite, s2, { seal: true }), rx: new TrafficKeys(f, suite, s1, { seal: false }), pending: Buffer.alloc(0) });
  const got = { a: [] as Buffer[], b: [] as Buffer[], errors: [] as Error[] };
  a.on('data', (d: Buffer) => got.a.push(Buffer.from(d)));
  b.on('data', (d: Buffer) => got.b.push(Buffer.from(d)));
  a.on('error', (e) => got.errors.push(e));
  b.on('error', (e) => got.errors.push(e));
  return { a, b, wa, wb, got, suite, aSecret: s1 };
}

const write = (s: Duplex, data: Buffer): Promise<void> => new Promise((resolve, reject) => s.write(data, (err) => (err ? reject(err) : resolve())));
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe.skipIf(!fns)('TLS 1.3 record stream', () => {
  it('HKDF-Expand-Label gives RFC 8448 §3 server handshake key and IV', () => {
    // RFC 8448 "Simple 1-RTT Handshake": server_handshake_traffic_secret and its key/iv.
    const secret = Buffer.from('b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38', 'hex');
    expect(hkdfExpandLabel('sha256', secret, 'key', 16).toString('hex')).toBe('3fce516009c21727d0f2e4e86ee403bc');
    expect(hkdfExpandLabel('sha256', secret, 'iv', 12).toString('hex')).toBe('5d313eb2671276ee13000b30');
  });

  // The addon against an independent AEAD (node:crypto, OpenSSL): AES-GCM runs on intel-ipsec-mb.
  const NODE_AEAD = { 1: 'aes-128-gcm', 2: 'aes-256-gcm', 3: 'chacha20-poly1305' } as const;
  it('names the code that runs AES-GCM (intel-ipsec-mb, installed by tools/setup.sh)', () => {
    expect(fns!.tlsAeadEngine()).toMatch(/^intel-ipsec-mb \S+ (no-aesni|sse|avx|avx2|avx512)$/);
  });

  for (const cipher of [1, 2, 3] as const) {
    it(`${NODE_AEAD[cipher]}: node:crypto opens what the addon seals, the addon opens what node:crypto seals`, () => {
      const key = crypto.randomBytes(cipher === 1 ? 16 : 32);
      const iv = crypto.randomBytes(12);
      const seq = 0x1_0000_0005n;
      const nonce = Buffer.from(iv);
      for (let i = 0; i < 8; i++) nonce[11 - i]! ^= Number((seq >> BigInt(8 * i)) & 0xffn);
      const opts = { authTagLength: 16 } as crypto.CipherGCMOptions;
      for (const size of [0, 1, 15, 16, 17, 4096 + 24, 16383]) {
        const plain = crypto.randomBytes(size);
        // Sealed by the addon from uneven pieces, opened by node:crypto.
        const pieces = [plain.subarray(0, size >> 2), plain.subarray(size >> 2, size - 1), plain.subarray(size - 1 < 0 ? 0 : size - 1)];
        const out = Buffer.alloc(size + 22);
        expect(fns!.tlsSeal(fns!.tlsCipher(cipher, key, true), iv, seq, 23, pieces, out)).toBe(1);
        const header = out.subarray(0, 5);
        expect([...header]).toEqual([23, 3, 3, (size + 17) >> 8, (size + 17) & 0xff]);
        const d = crypto.createDecipheriv(NODE_AEAD[cipher], key, nonce, opts) as crypto.DecipherGCM;
        d.setAAD(header);
        d.setAuthTag(out.subarray(5 + size + 1));
        expect(Buffer.concat([d.update(out.subarray(5, 5 + size + 1)), d.final()])).toEqual(Buffer.concat([plain, Buffer.from([23])]));
        // Sealed by node:crypto, opened by the addon (one record and as a batch); a flipped bit is refused.
        const c = crypto.createCipheriv(NODE_AEAD[cipher], key, nonce, opts) as crypto.CipherGCM;
        c.setAAD(header);
        const record = Buffer.concat([header, c.update(Buffer.concat([plain, Buffer.from([23])])), c.final(), c.getAuthTag()]);
        const opened = Buffer.alloc(size + 1);
        const rx = fns!.tlsCipher(cipher, key, false);
        expect(fns!.tlsOpen(rx, iv, seq, record, opened, 0)).toBe(size + 1);
        expect(opened.subarray(0, size)).toEqual(plain);
        const result = new Float64Array(4);
        expect(fns!.tlsOpenRecords(rx, iv, seq, record, 0, record.length, opened, 0, result)).toBe(1);
        expect([...result]).toEqual([0, record.length, size, 0]);
        expect(opened.subarray(0, size)).toEqual(plain);
        record[record.length - 1 - (size % 16)]! ^= 1;
        expect(fns!.tlsOpen(rx, iv, seq, record, opened, 0)).toBe(-1);
        expect(fns!.tlsOpenRecords(rx, iv, seq, record, 0, record.length, opened, 0, result)).toBe(0);
        expect(result[0]).toBe(-1);
      }
    });
  }

  for (const suite of ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
    it(`carries data both ways with ${suite}, records of at most 16 KiB`, async () => {
      const { a, b, wa, wb, got } = pair(fns!, suite);
      const big = crypto.randomBytes(300_000);
      await write(a, big);
      const wire = wa.drain();
      // Each record: header of type 23, version 0x0303, a body of at most 16384 + 1 + 16 bytes.
      for (let at = 0; at < wire.length; ) {
        expect(wire[at]).toBe(23);
        expect(wire.readUInt16BE(at + 1)).toBe(0x0303);
        expect(wire.readUInt16BE(at + 3)).toBeLessThanOrEqual(16384 + 17);
        at += 5 + wire.readUInt16BE(at + 3);
      }
      expect(wire.includes(big.subarray(1000, 1032))).toBe(false);
      wb.push(wire);
      await write(b, Buffer.from('pong'));
      wa.push(wb.drain());
      await turn();
      expect(Buffer.concat(got.b).equals(big)).toBe(true);
      expect(Buffer.concat(got.a).toString()).toBe('pong');
      expect(got.errors).toEqual([]);
    });
  }

  it('opens whatever way the bytes are cut, with KeyUpdates in between', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 40_000 }), fc.boolean()), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 20_000 }), { minLength: 1, maxLength: 30 }),
        async (messages, cuts) => {
          const { a, b, wa, wb, got } = pair(fns!);
          const sent: Buffer[] = [];
          for (const [size, update] of messages) {
            const m = crypto.randomBytes(size);
            sent.push(m);
            await write(a, m);
            if (update) a.keyUpdate(false);
          }
          const wire = wa.drain();
          for (let at = 0, i = 0; at < wire.length; i++) {
            const n = cuts[i % cuts.length]!;
            wb.push(wire.subarray(at, at + n));
            at += n;
          }
          await turn();
          expect(got.errors).toEqual([]);
          expect(Buffer.concat(got.b).equals(Buffer.concat(sent))).toBe(true);
          expect(wb.sent.length).toBe(0); // nobody asked b to update its keys
        },
      ),
      { numRuns: 60, seed: 7 },
    );
  });

  it('keeps the order of writes when large ones are sealed on the thread pool and small ones at once', async () => {
    const { a, b, wa, wb, got } = pair(fns!);
    const parts = [crypto.randomBytes(2_500_000), Buffer.from('small'), crypto.randomBytes(400_000), Buffer.from('tail')];
    a.cork();
    for (const p of parts.slice(0, 2)) a.write(p);
    a.uncork();
    a.write(parts[2]!);
    a.keyUpdate(false);
    await write(a, parts[3]!);
    wb.push(wa.drain());
    await turn();
    expect(got.errors).toEqual([]);
    expect(Buffer.concat(got.b).equals(Buffer.concat(parts))).toBe(true);
  });

  it('sendFile seals a header and a file range in order with writes; a file that ends early fails the stream', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-record-file-'));
    try {
      const content = crypto.randomBytes(300_000);
      const file = path.join(dir, 'image.raw');
      fs.writeFileSync(file, content);
      const fd = fs.openSync(file, 'r');
      try {
        const { a, b, wa, wb, got } = pair(fns!);
        expect(a.canSendFiles).toBe(true);
        await write(a, Buffer.from('before'));
        const header = Buffer.from('HEADER-28-BYTES-OF-NBD-CHUNK');
        for (const [at, len] of [[0, 16_384 - header.length], [12_345, 65_536], [4096, 200_000], [299_000, 1000]] as const) {
          await a.sendFile(header, fd, at, len);
        }
        await write(a, Buffer.from('after'));
        wb.push(wa.drain());
        await turn();
        const want = Buffer.concat([
          Buffer.from('before'),
          ...[[0, 16_384 - header.length], [12_345, 65_536], [4096, 200_000], [299_000, 1000]].flatMap(([at, len]) => [header, content.subarray(at!, at! + len!)]),
          Buffer.from('after'),
        ]);
        expect(got.errors).toEqual([]);
        expect(Buffer.concat(got.b).equals(want)).toBe(true);
        await expect(a.sendFile(header, fd, 299_000, 5000)).rejects.toMatchObject({ code: 'ENODATA' });
        expect(a.destroyed).toBe(true);
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers a KeyUpdate that asks for one, and both sides go on with new keys', async () => {
    const { a, b, wa, wb, got } = pair(fns!);
    a.keyUpdate(true);
    await write(a, Buffer.from('after'));
    wb.push(wa.drain());
    await turn();
    expect(Buffer.concat(got.b).toString()).toBe('after');
    await write(b, Buffer.from('reply'));
    wa.push(wb.drain()); // b's KeyUpdate, then its data under the new key
    await turn();
    expect(Buffer.concat(got.a).toString()).toBe('reply');
    expect(got.errors).toEqual([]);
  });

  it('ends the readable side at close_notify and sends one when ended', async () => {
    const { a, b, wa, wb } = pair(fns!);
    const ended = new Promise<void>((resolve) => b.once('end', resolve));
    b.resume();
    a.end();
    await turn();
    wb.push(wa.drain());
    await ended;
    expect(wb.sent.length).toBe(0);
  });

  it('fails on a record that does not authenticate and passes none of it on', async () => {
    const { a, b, wa, wb, got } = pair(fns!);
    await write(a, Buffer.from('first'));
    await write(a, Buffer.from('second'));
    const wire = wa.drain();
    wire[wire.length - 3]! ^= 0x40; // inside the second record's tag
    wb.push(wire);
    await turn();
    expect(Buffer.concat(got.b).toString()).toBe('first');
    expect(got.errors[0]).toBeInstanceOf(TlsRecordError);
    expect(b.destroyed).toBe(true);
  });

  it('fails on a replayed record (wrong sequence number)', async () => {
    const { a, b, wa, wb, got } = pair(fns!);
    await write(a, Buffer.from('once'));
    const wire = wa.drain();
    wb.push(Buffer.concat([wire, wire]));
    await turn();
    expect(Buffer.concat(got.b).toString()).toBe('once');
    expect(got.errors[0]?.message).toMatch(/did not authenticate/);
  });

  it('fails on an oversized record, a plaintext record type and a handshake message other than KeyUpdate', async () => {
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.from([23, 3, 3, 0x48, 0x00]), /TLS record of/],
      [Buffer.from([21, 3, 3, 0, 2, 1, 0]), /unexpected TLS record type 21/],
    ];
    for (const [bytes, why] of cases) {
      const { b, wb, got } = pair(fns!);
      wb.push(bytes);
      await turn();
      expect(got.errors[0]?.message).toMatch(why);
    }
    // A NewSessionTicket (handshake type 4) sealed under the right key is still refused.
    const { b, wb, got, suite, aSecret } = pair(fns!);
    const sealer = new TrafficKeys(fns!, suite, aSecret, { seal: true });
    const out = Buffer.alloc(4 + 22);
    sealer.seal(22, [Buffer.from([4, 0, 0, 0])], out);
    wb.push(out);
    await turn();
    expect(got.errors[0]?.message).toMatch(/unexpected TLS handshake message 4/);
  });
});
