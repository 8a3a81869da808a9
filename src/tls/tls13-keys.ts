/**
 * TLS 1.3 traffic keys (RFC 8446 §7): from a traffic secret (as OpenSSL logs it through Node's
 * 'keylog' event) to the AEAD key and IV of one direction, and the next secret after a KeyUpdate.
 * Used to carry a connection on after the handshake without Node's TLS socket (record-stream.ts).
 */
import crypto from 'node:crypto';
import { type CipherContext, RecordCipher, recordCount, type TlsRecordFunctions } from '../native/tls-record.js';

export interface Tls13Suite {
  /** IANA name, as tls.TLSSocket#getCipher().standardName gives it. */
  name: string;
  cipher: RecordCipher;
  keyLength: number;
  hash: 'sha256' | 'sha384';
}

const SUITES: readonly Tls13Suite[] = [
  { name: 'TLS_AES_128_GCM_SHA256', cipher: RecordCipher.Aes128Gcm, keyLength: 16, hash: 'sha256' },
  { name: 'TLS_AES_256_GCM_SHA384', cipher: RecordCipher.Aes256Gcm, keyLength: 32, hash: 'sha384' },
  { name: 'TLS_CHACHA20_POLY1305_SHA256', cipher: RecordCipher.ChaCha20Poly1305, keyLength: 32, hash: 'sha256' },
];

export function tls13Suite(name: string | undefined): Tls13Suite | undefined {
  return SUITES.find((s) => s.name === name);
}

/** HKDF-Expand-Label (RFC 8446 §7.1) with an empty context. */
export function hkdfExpandLabel(hash: Tls13Suite['hash'], secret: Buffer, label: string, length: number): Buffer {
  const full = Buffer.from('tls13 ' + label, 'latin1');
  const info = Buffer.concat([Buffer.from([length >> 8, length & 0xff, full.length]), full, Buffer.from([0])]);
  const out: Buffer[] = [];
  let prev = Buffer.alloc(0);
  for (let i = 1, have = 0; have < length; i++, have += prev.length) {
    prev = crypto.createHmac(hash, secret).update(prev).update(info).update(Buffer.from([i])).digest();
    out.push(prev);
  }
  return Buffer.concat(out).subarray(0, length);
}

/**
 * One direction of a connection as one side sees it: the secret, the IV and the addon's cipher
 * context made from it (sealing for our direction, opening for the peer's), the next sequence number.
 */
export class TrafficKeys {
  readonly suite: Tls13Suite;
  readonly #secret: Buffer;
  readonly #fns: TlsRecordFunctions;
  readonly #seal: boolean;
  readonly ctx: CipherContext;
  readonly iv: Buffer;
  seq: bigint;

  constructor(fns: TlsRecordFunctions, suite: Tls13Suite, secret: Buffer, opts: { seal: boolean; seq?: bigint }) {
    this.suite = suite;
    this.#secret = secret;
    this.#fns = fns;
    this.#seal = opts.seal;
    this.ctx = fns.tlsCipher(suite.cipher, hkdfExpandLabel(suite.hash, secret, 'key', suite.keyLength), opts.seal);
    this.iv = hkdfExpandLabel(suite.hash, secret, 'iv', 12);
    this.seq = opts.seq ?? 0n;
  }

  /** After a KeyUpdate: the next generation of this direction's secret, sequence numbers from 0. */
  next(): TrafficKeys {
    const hashLength = this.suite.hash === 'sha256' ? 32 : 48;
    return new TrafficKeys(this.#fns, this.suite, hkdfExpandLabel(this.suite.hash, this.#secret, 'traffic upd', hashLength), { seal: this.#seal });
  }

  /** Seals the chunks into `out` as records of `type`; returns how many. */
  seal(type: number, chunks: Buffer[], out: Buffer): number {
    const n = this.#fns.tlsSeal(this.ctx, this.iv, this.seq, type, chunks, out);
    this.seq += BigInt(n);
    return n;
  }

  /** Whether sealSend is available (the addon has tlsSealSend). */
  get canSealSend(): boolean {
    return this.#fns.tlsSealSend !== undefined;
  }

  /**
   * Seals the chunks (`bytes` in all) into `out` as records of `type` and sends what the socket
   * `fd` takes at once; returns the bytes of `out` sent, or -errno when the socket failed.
   */
  sealSend(type: number, chunks: Buffer[], bytes: number, out: Buffer, fd: number): number {
    const sent = this.#fns.tlsSealSend!(this.ctx, this.iv, this.seq, type, chunks, out, fd);
    this.seq += BigInt(recordCount(bytes));
    return sent;
  }

  /**
   * The same on the thread pool: the sequence numbers are taken now, so seals issued one after the
   * other may finish in any order and still be sent in the order they were issued.
   */
  sealAsync(type: number, chunks: Buffer[], bytes: number, out: Buffer, done: (err: Error | null) => void): void {
    const seq = this.seq;
    this.seq += BigInt(recordCount(bytes));
    this.#fns.tlsSealAsync(this.ctx, this.iv, seq, type, chunks, out, (err) => done(err));
  }

  /** Whether sealFileAsync is available (the addon has tlsSealFileAsync). */
  get canSealFiles(): boolean {
    return this.#fns.tlsSealFileAsync !== undefined && this.#fns.tlsSealFile !== undefined;
  }

  /** sealFileAsync at once, on the event loop (for what the page cache serves); returns the records. */
  sealFile(type: number, header: Buffer, fd: number, position: number, length: number, out: Buffer): number {
    const n = this.#fns.tlsSealFile!(this.ctx, this.iv, this.seq, type, header, fd, position, length, out);
    this.seq += BigInt(n);
    return n;
  }

  /** sealAsync of `header` followed by `length` bytes of the file `fd` from `position` (see tlsSealFileAsync). */
  sealFileAsync(type: number, header: Buffer, fd: number, position: number, length: number, out: Buffer, done: (err: Error | null) => void): void {
    const seq = this.seq;
    this.seq += BigInt(recordCount(header.length + length));
    this.#fns.tlsSealFileAsync!(this.ctx, this.iv, seq, type, header, fd, position, length, out, (err) => done(err));
  }

  /**
   * Opens the whole records in data[from, end) into out[offset...] until one that is not
   * application data (tlsOpenRecords; `result` says where it stopped and why); steps past the
   * records that authenticated.
   */
  openRecords(data: Buffer, from: number, end: number, out: Buffer, offset: number, result: Float64Array): void {
    const n = this.#fns.tlsOpenRecords(this.ctx, this.iv, this.seq, data, from, end, out, offset, result);
    if (n > 0) this.seq += BigInt(n);
  }

  /** Opens one record into out[offset...]: the inner length, or -1 (and no step) when not authentic. */
  open(record: Buffer, out: Buffer, offset: number): number {
    const n = this.#fns.tlsOpen(this.ctx, this.iv, this.seq, record, out, offset);
    if (n >= 0) this.seq += 1n;
    return n;
  }
}

/** The application traffic secrets of a server-side connection, from its keylog lines. */
export class KeylogSecrets {
  client: Buffer | undefined;
  server: Buffer | undefined;

  /** Takes one NSS key log line ("LABEL client_random secret"). */
  add(line: Buffer): void {
    const [label, , hex] = line.toString('latin1').trim().split(' ');
    if (!hex) return;
    if (label === 'CLIENT_TRAFFIC_SECRET_0') this.client = Buffer.from(hex, 'hex');
    else if (label === 'SERVER_TRAFFIC_SECRET_0') this.server = Buffer.from(hex, 'hex');
  }
}
