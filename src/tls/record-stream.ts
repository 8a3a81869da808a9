/**
 * TlsRecordStream: a TLS 1.3 connection carried on after its handshake without Node's TLS socket.
 * rebound seals and opens the records itself (RFC 8446 §5) with the native addon, on the raw socket.
 *
 * Why: Node's TLS socket encrypts every write on its own — it copies the write's buffers into one,
 * splits it through OpenSSL's BIOs and hands each piece to the socket — which cost rebound twice the
 * server CPU per GiB of nbdkit with GnuTLS (tools/bench/tls.mjs). Here a whole batch of replies
 * (a corked writev) becomes records in one native call and one socket write, and all the records
 * of one socket read are opened into one buffer (one 'data' event: no RecordCoalescer needed).
 *
 * Design notes:
 *  - The handshake stays with Node/OpenSSL (certificates, PSK, verification, alerts); record-tap.ts
 *    counts the records sent and received under the application keys, and nbd-tls.ts hands the
 *    connection over here with those sequence numbers and the keys from OpenSSL's keylog.
 *  - Only what a peer may send after the handshake is accepted: application data, alerts
 *    (close_notify ends the stream, any other fails it) and KeyUpdate (new receive keys, and ours
 *    too when the peer asks). Anything else, a record over the size limit or one that does not
 *    authenticate fails the stream: nothing unauthenticated is ever passed on.
 *  - Writes complete when the socket has taken the records (its write callback), so the stream's
 *    writableLength and 'drain' tell the truth about unsent data, as a socket's would.
 *  - sendChunks() is the fast way in for a batch of replies (nbd/reply-writer.ts): sealed at once,
 *    without the Writable's per-chunk bookkeeping (about 1.5 us of CPU per 4 KiB READ reply).
 *    Its bytes count in `unsentBytes`, not in writableLength (which stays the Writable's own).
 *    When nothing else waits to be sent, a batch below ASYNC_SEAL_MIN is sealed and sent to the
 *    socket in one native call (tlsSealSend), past Node's socket stream and its write request;
 *    only what the socket does not take at once goes through the stream (+1.7 % IOPS, -2.4 % CPU
 *    per 4 KiB READ over TLS, A/B of the same build, 2026-12-07).
 *  - end() sends close_notify, then ends the socket; destroy() destroys it.
 */
import net from 'node:net';
import { Duplex } from 'node:stream';
import { getSystemErrorName } from 'node:util';
import {
  OPENED_ALL,
  OPENED_NO_CONTENT_TYPE,
  OPENED_NOT_AUTHENTIC,
  RECORD_HEADER,
  RECORD_PLAINTEXT_MAX,
  RECORD_TAG,
  sealedSize,
} from '../native/tls-record.js';
import type { TrafficKeys } from './tls13-keys.js';
import { handleDescriptor } from '../native/socket-buffer.js';
import { syncFileRead } from '../util/file-io.js';

export const ContentType = { Alert: 21, Handshake: 22, ApplicationData: 23 } as const;
const KEY_UPDATE = 24;
/** Plaintext sealed per native call and output buffer (64 full records). */
const SEAL_SEGMENT = 1024 * 1024;
/**
 * Segments this large are sealed on the thread pool (smaller ones cost less than the hand-off).
 * Above a tick's worth of small replies (32 replies of 4 KiB: 129 KiB): sealed on the pool, such
 * batches cost 4 us more CPU per request (fio 4 KiB random reads at queue depth 32, as in
 * tools/bench/tls.mjs: 0.77x nbdkit's IOPS against 0.85x sealed at once, 2026-12-07).
 */
const ASYNC_SEAL_MIN = 512 * 1024;

/**
 * Where sealSend builds a batch's records (shared by the thread's streams: each call sends or
 * copies out all of it before it returns); made at the first such batch.
 */
let sendScratch: Buffer | undefined;

/** One sealed (or being sealed) segment waiting for its turn on the socket. */
interface SealSlot {
  out: Buffer;
  sealed: boolean;
  error?: Error | null;
  written: (err?: Error | null) => void;
}
/** Largest record body a peer may send: plaintext, content type and padding up to 2^14 + 256 (RFC 8446 §5.2). */
const RECORD_BODY_MAX = RECORD_PLAINTEXT_MAX + 256;

/** Where sealed records are built (the NBD server's reply pool); they return to it once sent. */
export interface SealBuffers {
  acquire(size: number): Buffer;
  release(buf: Buffer): void;
}

const UNPOOLED: SealBuffers = { acquire: (size) => Buffer.allocUnsafe(size), release: () => undefined };

export interface RecordStreamState {
  /** Our direction (sealing) and the peer's (opening), at their next sequence numbers. */
  tx: TrafficKeys;
  rx: TrafficKeys;
  /** Ciphertext received behind the handshake and not yet opened (whole or partial records). */
  pending: Buffer;
}

/** The peer broke the record layer; the connection cannot go on. */
export class TlsRecordError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsRecordError';
  }
}

export class TlsRecordStream extends Duplex {
  readonly #raw: Duplex;
  readonly #buffers: SealBuffers;
  #tx: TrafficKeys;
  #rx: TrafficKeys;
  /** A partial record waiting for the rest of its bytes. */
  #partial: Buffer = Buffer.alloc(0);
  #closeNotified = false;
  readonly #sealing: SealSlot[] = [];
  /** Where #open's native call says how far it got (reused: no allocation per socket read). */
  readonly #opened = new Float64Array(4);
  /** Bytes handed to sendChunks that the socket has not taken yet. */
  #chunksUnsent = 0;
  /** The raw socket's descriptor, for sealSend (undefined: not a socket with one, or no addon support). */
  readonly #fd: number | undefined;

  constructor(raw: Duplex, state: RecordStreamState, buffers: SealBuffers = UNPOOLED) {
    super({ allowHalfOpen: true });
    this.#raw = raw;
    this.#buffers = buffers;
    this.#tx = state.tx;
    this.#rx = state.rx;
    this.#fd = raw instanceof net.Socket && state.tx.canSealSend ? handleDescriptor(raw) : undefined;
    raw.on('data', (chunk: Buffer) => this.#received(chunk));
    raw.on('end', () => this.#peerEnded());
    raw.on('error', (err) => this.destroy(err));
    raw.on('close', () => this.destroy());
    if (state.pending.length > 0) queueMicrotask(() => this.#received(state.pending));
  }

  override _read(): void {
    this.#raw.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.#seal(ContentType.ApplicationData, [chunk], done);
  }

  override _writev(chunks: { chunk: Buffer }[], done: (err?: Error | null) => void): void {
    this.#seal(ContentType.ApplicationData, chunks.map((c) => c.chunk), done);
  }

  override _final(done: (err?: Error | null) => void): void {
    if (this.#raw.destroyed) return done();
    this.#seal(ContentType.Alert, [Buffer.from([1, 0])], () => {
      this.#raw.end(); // after the close_notify
      done();
    });
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.#raw.destroy();
    done(err);
  }

  /**
   * Seals `chunks` as records of `type` and hands them to the socket, SEAL_SEGMENT bytes of
   * plaintext per native call and per pooled output buffer; `done` once the socket took them all.
   * Segments of ASYNC_SEAL_MIN bytes or more are sealed on the thread pool while the event loop goes
   * on; #sendSealed keeps the socket's order the order of the calls.
   */
  #seal(type: number, chunks: Buffer[], done?: (err?: Error | null) => void): void {
    if (this.#raw.destroyed) return done?.(new Error('the connection is closed'));
    let segment: Buffer[] = [];
    let segmentBytes = 0;
    let writing = 1; // the writes below, plus this loop until it issued them all
    let failed: Error | null | undefined;
    const written = (err?: Error | null): void => {
      failed ??= err;
      if (--writing === 0) done?.(failed);
    };
    const flush = (): void => {
      const out = this.#buffers.acquire(sealedSize(segmentBytes));
      const slot: SealSlot = { out, sealed: false, written };
      writing++;
      this.#sealing.push(slot);
      if (segmentBytes >= ASYNC_SEAL_MIN) {
        this.#tx.sealAsync(type, segment, segmentBytes, out, (err) => {
          slot.sealed = true;
          slot.error = err;
          this.#sendSealed();
        });
      } else {
        this.#tx.seal(type, segment, out);
        slot.sealed = true;
      }
      segment = [];
      segmentBytes = 0;
    };
    for (const c of chunks) {
      for (let at = 0; at < c.length; ) {
        const take = Math.min(c.length - at, SEAL_SEGMENT - segmentBytes);
        segment.push(at === 0 && take === c.length ? c : c.subarray(at, at + take));
        segmentBytes += take;
        at += take;
        if (segmentBytes === SEAL_SEGMENT) flush();
      }
    }
    if (segmentBytes > 0 || type !== ContentType.ApplicationData) flush();
    this.#sendSealed();
    written();
  }

  /**
   * Sends `chunks` as application data, sealed now, in one native call for all of them, without
   * the Writable's buffer; `done` once the socket took them (or failed). In order with write():
   * while the Writable holds anything, the chunks queue behind it through write().
   */
  sendChunks(chunks: Buffer[], done: (err?: Error | null) => void): void {
    if (this.writableLength > 0 || this.writableCorked > 0) {
      chunks.forEach((c, i) => this.write(c, i === chunks.length - 1 ? done : undefined));
      return;
    }
    let bytes = 0;
    for (const c of chunks) bytes += c.length;
    if (this.#fd !== undefined && bytes < ASYNC_SEAL_MIN && this.#sealing.length === 0 && this.#raw.writableLength === 0 && !this.#raw.destroyed) {
      return this.#sealSend(chunks, bytes, done);
    }
    this.#chunksUnsent += bytes;
    this.#seal(ContentType.ApplicationData, chunks, (err) => {
      this.#chunksUnsent -= bytes;
      done(err);
    });
  }

  /**
   * sendChunks when nothing else waits to be sent: seals the batch and sends it to the socket in one
   * native call (no stream write, no write request); what the socket does not take at once is
   * copied out and written through the socket's stream. `done` runs at once when all was sent.
   */
  #sealSend(chunks: Buffer[], bytes: number, done: (err?: Error | null) => void): void {
    const size = sealedSize(bytes);
    const scratch = (sendScratch ??= Buffer.allocUnsafe(sealedSize(ASYNC_SEAL_MIN)));
    const sent = this.#tx.sealSend(ContentType.ApplicationData, chunks, bytes, scratch, this.#fd!);
    if (sent < 0) {
      const code = getSystemErrorName(sent);
      const err: NodeJS.ErrnoException = Object.assign(new Error(`sending TLS records failed (${code})`), { code });
      this.destroy(err);
      return done(err);
    }
    if (sent === size) return done();
    const rest = Buffer.from(scratch.subarray(sent, size)); // a copy: the scratch is reused at once
    this.#chunksUnsent += rest.length;
    this.#raw.write(rest, (err) => {
      this.#chunksUnsent -= rest.length;
      done(err);
    });
  }

  /** Application data not yet taken by the socket: the Writable's and sendChunks'. */
  get unsentBytes(): number {
    return this.writableLength + this.#chunksUnsent;
  }

  /** Whether sendFile can be used (the addon seals from files). */
  get canSendFiles(): boolean {
    return this.#tx.canSealFiles;
  }

  /**
   * Sends `header` then `length` bytes of the file `fd` from `position` as application data, sealed
   * straight from the file (no reply buffer), at once while the page cache serves it, otherwise on
   * the thread pool; resolves once the socket took the records. Records go out in the order of the
   * calls to this and to write(): the caller makes sure that nothing written before is still
   * buffered in the stream (writableLength 0).
   */
  sendFile(header: Buffer, fd: number, position: number, length: number): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#raw.destroyed) return reject(new Error('the connection is closed'));
      const out = this.#buffers.acquire(sealedSize(header.length + length));
      const slot: SealSlot = { out, sealed: false, written: (err) => (err ? reject(err) : resolve()) };
      this.#sealing.push(slot);
      try {
        // While the page cache serves the file, at once (as util/file-io.ts's small reads): no thread hand-off.
        if (syncFileRead(length, () => this.#tx.sealFile(ContentType.ApplicationData, header, fd, position, length, out)) !== undefined) {
          slot.sealed = true;
          this.#sendSealed();
          return;
        }
      } catch (err) {
        slot.sealed = true;
        slot.error = err as Error;
        this.#sendSealed();
        return;
      }
      this.#tx.sealFileAsync(ContentType.ApplicationData, header, fd, position, length, out, (err) => {
        slot.sealed = true;
        slot.error = err;
        this.#sendSealed();
      });
    });
  }

  /** Hands the sealed segments at the head of the queue to the socket, in the order they were issued. */
  #sendSealed(): void {
    while (this.#sealing.length > 0 && this.#sealing[0]!.sealed) {
      const slot = this.#sealing.shift()!;
      if (slot.error || this.#raw.destroyed) {
        this.#buffers.release(slot.out);
        slot.written(slot.error ?? new Error('the connection is closed'));
        if (slot.error) this.destroy(slot.error);
        continue;
      }
      this.#raw.write(slot.out, (err) => {
        this.#buffers.release(slot.out);
        slot.written(err);
      });
    }
  }

  #received(chunk: Buffer): void {
    if (this.destroyed || this.#closeNotified) return;
    let data = chunk;
    if (this.#partial.length > 0) {
      // Complete the partial record with just the bytes it needs; the rest is opened in place.
      const p = this.#partial;
      const need = p.length < RECORD_HEADER ? RECORD_HEADER - p.length : RECORD_HEADER + p.readUInt16BE(3) - p.length;
      if (chunk.length < need) {
        this.#partial = Buffer.concat([p, chunk]);
        return;
      }
      this.#partial = Buffer.alloc(0);
      const head = Buffer.concat([p, chunk.subarray(0, need)]);
      if (head.length === RECORD_HEADER) {
        // Only the header was missing: go on with header + chunk as one.
        data = Buffer.concat([head, chunk.subarray(need)]);
      } else {
        if (!this.#open(head)) return;
        data = chunk.subarray(need);
      }
    }
    this.#open(data);
  }

  /**
   * Opens the whole records at the start of `data` into one buffer of application data and
   * passes it on; keeps a partial record at the end. False when the stream failed or ended.
   */
  #open(data: Buffer): boolean {
    let end = 0;
    let room = 0;
    while (data.length - end >= RECORD_HEADER) {
      const len = data.readUInt16BE(end + 3);
      if (data[end] !== ContentType.ApplicationData) return this.#fail(`unexpected TLS record type ${data[end]} after the handshake`);
      if (len > RECORD_BODY_MAX + RECORD_TAG || len < RECORD_TAG + 1) return this.#fail(`TLS record of ${len} bytes`);
      if (data.length - end < RECORD_HEADER + len) break;
      room += len - RECORD_TAG;
      end += RECORD_HEADER + len;
    }
    if (end < data.length) this.#partial = Buffer.from(data.subarray(end));
    if (end === 0) return true;
    const out = Buffer.allocUnsafe(room);
    const result = this.#opened;
    let start = 0; // application data not yet passed on: out[start, filled)
    let filled = 0;
    const passOn = (): void => {
      if (filled > start) this.#deliver(out.subarray(start, filled));
      start = filled;
    };
    // One native call opens the records up to the next one that is not application data.
    for (let at = 0; at < end; ) {
      this.#rx.openRecords(data, at, end, out, filled, result);
      const stop = result[0]!;
      at = result[1]!;
      filled = result[2]!;
      if (stop === OPENED_ALL) break;
      passOn(); // the records before it were authentic
      if (stop === OPENED_NOT_AUTHENTIC) return this.#fail('a TLS record did not authenticate (bad record MAC)');
      if (stop === OPENED_NO_CONTENT_TYPE) return this.#fail('a TLS record without a content type');
      // The next record opens over this one's content, copied out first.
      if (!this.#control(stop, Buffer.from(out.subarray(filled, result[3]!)))) return false;
    }
    passOn();
    return true;
  }

  #deliver(data: Buffer): boolean {
    const more = this.push(data);
    if (!more) this.#raw.pause();
    return more;
  }

  /** An alert or a post-handshake message. False when the stream ended or failed. */
  #control(type: number, body: Buffer): boolean {
    if (type === ContentType.Alert) {
      if (body.length === 2 && body[1] === 0) {
        this.#closeNotified = true;
        this.push(null);
        return false;
      }
      return this.#fail(`TLS alert ${body[1] ?? '?'} from the peer`);
    }
    if (type === ContentType.Handshake && body.length === 5 && body[0] === KEY_UPDATE && body.readUIntBE(1, 3) === 1 && body[4]! <= 1) {
      this.#rx = this.#rx.next();
      if (body[4] === 1) this.keyUpdate(false);
      return true;
    }
    return this.#fail(`unexpected TLS ${type === ContentType.Handshake ? `handshake message ${body[0]}` : `content type ${type}`} after the handshake`);
  }

  /** Sends a KeyUpdate (asking the peer to update too when `request`) and moves to new keys. */
  keyUpdate(request: boolean): void {
    this.#seal(ContentType.Handshake, [Buffer.from([KEY_UPDATE, 0, 0, 1, request ? 1 : 0])]);
    this.#tx = this.#tx.next();
  }

  #peerEnded(): void {
    // A peer that closes without close_notify: the stream ends all the same (no more data can come).
    if (!this.#closeNotified) {
      this.#closeNotified = true;
      this.push(null);
    }
  }

  #fail(reason: string): false {
    this.destroy(new TlsRecordError(reason));
    return false;
  }
}
