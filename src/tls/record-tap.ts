/**
 * RecordTap: sits between the raw socket and Node's TLS socket during a TLS handshake and counts
 * the records each side sends under the application traffic keys, so that the connection can be
 * handed over to TlsRecordStream afterwards with the right sequence numbers (RFC 8446 §5.3: each
 * direction numbers its records from 0 under each key).
 *
 * Which records are under the application keys cannot be told from their headers (TLS 1.3 sends
 * every encrypted record as application_data), so the tap tries to open each one with the
 * application key of its direction (from OpenSSL's keylog) at the next sequence number: the tag
 * says yes or no. Handshake records fail; from the first success on every record must succeed,
 * or the count is lost and the connection stays on Node's TLS socket. Only handshake-time traffic
 * is opened here (a few records), never bulk data.
 *
 * The tap passes whole records to the TLS socket and keeps a partial one until it is complete.
 * hold() stops passing records on (they stay here, for the record stream); detach() ends the tap's
 * part and tells the state, or undefined when the count cannot be trusted.
 */
import { Duplex } from 'node:stream';
import { listen } from '../util/listeners.js';
import { RECORD_HEADER, RECORD_TAG, type TlsRecordFunctions } from '../native/tls-record.js';
import { ContentType } from './record-stream.js';
import { KeylogSecrets, type Tls13Suite, TrafficKeys } from './tls13-keys.js';

/** Bytes held during the hand-over before the raw socket is paused (the record stream resumes it). */
const HOLD_MAX = 1024 * 1024;

/** Records of one direction seen by the tap. */
class RecordCount {
  keys: TrafficKeys | undefined;
  /** Bytes of a record not yet complete. */
  partial: Buffer = Buffer.alloc(0);
  started = false;
  lost = false;

  /** The whole records at the start of `partial + chunk`; keeps the rest. */
  split(chunk: Buffer): Buffer[] {
    let data = this.partial.length > 0 ? Buffer.concat([this.partial, chunk]) : chunk;
    const records: Buffer[] = [];
    while (data.length >= RECORD_HEADER && data.length >= RECORD_HEADER + data.readUInt16BE(3)) {
      const n = RECORD_HEADER + data.readUInt16BE(3);
      records.push(data.subarray(0, n));
      data = data.subarray(n);
    }
    this.partial = data.length > 0 ? Buffer.from(data) : Buffer.alloc(0);
    return records;
  }
}

export interface TapState {
  /** Next sequence numbers under the application keys. */
  txSeq: bigint;
  rxSeq: bigint;
  secrets: { client: Buffer; server: Buffer };
  /** Ciphertext received and not passed to the TLS socket (held records, a partial record). */
  pending: Buffer;
}

export class RecordTap extends Duplex {
  readonly #raw: Duplex;
  readonly #fns: TlsRecordFunctions;
  readonly #secrets = new KeylogSecrets();
  readonly #tx = new RecordCount();
  readonly #rx = new RecordCount();
  /** The negotiated suite, once known (set by the caller from the TLS socket). */
  suite: () => Tls13Suite | undefined = () => undefined;
  #held: Buffer[] | undefined;
  #heldBytes = 0;
  #detached = false;
  readonly #unlisten: () => void;

  constructor(raw: Duplex, fns: TlsRecordFunctions) {
    super({ allowHalfOpen: true });
    this.#raw = raw;
    this.#fns = fns;
    this.#unlisten = listen(raw, {
      data: (chunk: Buffer) => this.#received(chunk),
      end: () => this.push(null),
      error: (err: Error) => this.destroy(err),
      close: () => this.destroy(),
    });
  }

  /** One line of the TLS socket's 'keylog' event. */
  keylog(line: Buffer): void {
    this.#secrets.add(line);
  }

  override _read(): void {
    if (!this.#detached) this.#raw.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.#detached) return done();
    for (const r of this.#tx.split(chunk)) this.#count(this.#tx, r, this.#secrets.server);
    this.#raw.write(chunk, (err) => done(err));
  }

  override _final(done: (err?: Error | null) => void): void {
    if (!this.#detached) this.#raw.end();
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (!this.#detached) this.#raw.destroy();
    done(err);
  }

  #received(chunk: Buffer): void {
    if (this.#held) {
      this.#held.push(chunk);
      this.#heldBytes += chunk.length;
      // Held only for the moment of the hand-over; a client that floods it is not read further.
      if (this.#heldBytes > HOLD_MAX) this.#raw.pause();
      return;
    }
    for (const r of this.#rx.split(chunk)) {
      this.#count(this.#rx, r, this.#secrets.client);
      if (!this.push(r)) this.#raw.pause();
    }
  }

  #count(c: RecordCount, record: Buffer, secret: Buffer | undefined): void {
    if (c.lost) return;
    if (record[0] !== ContentType.ApplicationData || !secret) {
      if (c.started) c.lost = true;
      return;
    }
    if (!c.keys) {
      const suite = this.suite();
      if (!suite) {
        c.lost = true; // TLS 1.2 or a suite the record stream does not speak
        return;
      }
      c.keys = new TrafficKeys(this.#fns, suite, secret, { seal: false });
    }
    const out = Buffer.allocUnsafe(record.length);
    const n = record.length > RECORD_HEADER + RECORD_TAG ? c.keys.open(record, out, 0) : -1;
    if (n < 0) {
      if (c.started) c.lost = true;
      return;
    }
    let last = n - 1;
    while (last >= 0 && out[last] === 0) last--;
    // A KeyUpdate during the handshake phase would change the keys: give up counting.
    if (out[last] === ContentType.Handshake && out[0] === 24) c.lost = true;
    c.started = true;
  }

  /** From now on received records stay here instead of going to the TLS socket. */
  hold(): void {
    this.#held ??= [];
  }

  /** Undoes hold(): the records held go to the TLS socket after all. */
  release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    this.#heldBytes = 0;
    for (const chunk of held) this.#received(chunk);
  }

  /**
   * Ends the tap: it no longer listens to the raw socket nor writes to it. Returns the state for
   * the record stream, or undefined (and the tap carries on) when the count cannot be trusted.
   */
  detach(): TapState | undefined {
    const client = this.#secrets.client;
    const server = this.#secrets.server;
    const ok = client && server && this.suite() && !this.#tx.lost && !this.#rx.lost && this.#tx.partial.length === 0;
    if (!ok) return undefined;
    this.#detached = true;
    this.#unlisten();
    const pending = Buffer.concat([this.#rx.partial, ...(this.#held ?? [])]);
    return { txSeq: this.#tx.keys?.seq ?? 0n, rxSeq: this.#rx.keys?.seq ?? 0n, secrets: { client, server }, pending };
  }
}
