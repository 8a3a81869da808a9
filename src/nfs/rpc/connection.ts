/**
 * One ONC RPC connection over TCP (RFC 5531 §11 record marking).
 *
 * Design notes:
 *  - Records are decoded as bytes arrive (json-pack's RmRecordDecoder and RpcMessageDecoder) and
 *    every call is dispatched at once, without waiting for earlier ones: replies go out by XID in
 *    completion order. A slow READ of a backup never holds up a GETATTR or NULL behind it.
 *  - Each reply is handed to the socket in one synchronous step (record mark + RPC header + body
 *    parts); replies completed in the same tick go out in one writev (cork until next tick), like
 *    src/nbd/transmission.ts. Body parts are written as given, so a READ reply's data buffer (filled
 *    by the device) is never copied.
 *  - Backpressure: at most `maxInflight` calls run at once, the records of the running calls
 *    (a WRITE's data lives in its record) stay within `maxInflightBytes`, and reading pauses while
 *    the socket has more than SEND_BUFFER_LIMIT bytes queued. A record over `maxRecordBytes` —
 *    counting its fragments without the last-fragment bit, which the decoder keeps until the record
 *    is complete, and the buffered part of the current fragment — or a stream that cannot be
 *    decoded, drops the connection with a rate-limited log line (the stream cannot be
 *    resynchronised). So a client's memory on the server is bounded by maxInflightBytes plus
 *    maxRecordBytes plus one socket chunk; READ and WRITE data also count against the daemon's
 *    total (nfs3/procs-files.ts).
 *  - The calls of a client that left see their `signal` aborted (a wait for the daemon's budget ends).
 *  - Graceful stop: reading stops, in-flight calls finish and are answered, then the socket ends.
 */
import type { Socket } from 'node:net';
import { RmRecordDecoder } from '@jsonjoy.com/json-pack/lib/rm/RmRecordDecoder.js';
import { errorText } from '../../errors.js';
import type { Logger } from '../../util/log.js';
import { LogLimiter } from '../../util/log-limiter.js';
import { BlockError } from '../../errors.js';
import { MAX_RECORD_BYTES } from './constants.js';
import { callProgram, decodeCall, encodeResult, type RpcCall, type RpcProgram, type RpcResult, type XdrReader } from './messages.js';
import { TickCork } from '../../util/tick-cork.js';

const SEND_BUFFER_LIMIT = 32 * 1024 * 1024;
/** Default bytes of the records of the calls running on one connection. */
export const DEFAULT_RPC_INFLIGHT_BYTES = 64 * 1024 * 1024;

export interface RpcConnectionOptions {
  /** Calls processed concurrently. */
  maxInflight: number;
  /** Record bytes of the running calls (default DEFAULT_RPC_INFLIGHT_BYTES; one larger record still runs). */
  maxInflightBytes?: number;
  /** Largest record, unfinished fragments included (default MAX_RECORD_BYTES). */
  maxRecordBytes?: number;
  /** Rate limit of refusal log lines (default: one of its own). */
  limiter?: LogLimiter;
}

export { success, type RpcCall, type RpcProgram, type RpcResult, type XdrReader } from './messages.js';

export class RpcConnection {
  readonly #socket: Socket;
  readonly #programs: ReadonlyMap<number, RpcProgram>;
  readonly #log: Logger;
  readonly #maxInflight: number;
  readonly #maxInflightBytes: number;
  readonly #maxRecordBytes: number;
  readonly #limiter: LogLimiter;
  readonly #rm = new RmRecordDecoder();
  readonly #peer: { address: string; port: number };
  readonly #local: string;
  readonly #gone = new AbortController();
  #inflight = 0;
  /** Bytes of the records of the calls running now. */
  #inflightBytes = 0;
  /** Bytes of the non-final fragments of the record being received (held by the decoder). */
  #fragmentBytes = 0;
  #paused = false;
  #stopping = false;
  readonly #tickCork: TickCork;
  #idle: Array<() => void> = [];
  readonly closed: Promise<void>;

  constructor(socket: Socket, programs: ReadonlyMap<number, RpcProgram>, log: Logger, opts: RpcConnectionOptions) {
    this.#socket = socket;
    this.#tickCork = new TickCork(socket);
    this.#programs = programs;
    this.#log = log;
    this.#maxInflight = opts.maxInflight;
    this.#maxInflightBytes = opts.maxInflightBytes ?? DEFAULT_RPC_INFLIGHT_BYTES;
    this.#maxRecordBytes = opts.maxRecordBytes ?? MAX_RECORD_BYTES;
    this.#limiter = opts.limiter ?? new LogLimiter();
    this.#peer = { address: normaliseAddress(socket.remoteAddress ?? ''), port: socket.remotePort ?? 0 };
    this.#local = normaliseAddress(socket.localAddress ?? '');
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('drain', () => this.#maybeResume());
    socket.on('error', (err) => this.#log.debug('connection error', { err: err.message }));
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.#gone.abort(new BlockError('ESHUTDOWN', 'the client went away'));
        resolve();
      }),
    );
  }

  get inflight(): number {
    return this.#inflight;
  }

  /** Graceful stop: read nothing more, answer what is in flight, end the socket. */
  async close(): Promise<void> {
    this.#stopping = true;
    this.#socket.pause();
    if (this.#inflight > 0) await new Promise<void>((r) => this.#idle.push(r));
    this.#socket.end();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    if (this.#stopping) return;
    this.#rm.push(chunk);
    try {
      for (;;) {
        const before = this.#rm.reader.size();
        const rec = this.#rm.readRecord();
        if (rec) {
          this.#fragmentBytes = 0;
          this.#onRecord(rec);
        } else if (this.#rm.reader.size() === before) break;
        // A non-final fragment is consumed without a record (the decoder keeps it): count it and
        // go on while bytes are being used.
        else this.#fragmentBytes += before - this.#rm.reader.size() - 4;
        if (this.#overLimit()) return;
      }
    } catch (err) {
      this.#limiter.warn(this.#log, 'rpc-undecodable', this.#peer.address, 'undecodable RPC stream; closing the connection', { err: errorText(err) });
      this.#socket.destroy();
      return;
    }
    this.#overLimit();
  }

  /**
   * The record being received (its finished fragments plus what is buffered of the rest) is over
   * maxRecordBytes: the connection is dropped (nothing else can be done with the stream).
   */
  #overLimit(): boolean {
    const size = this.#fragmentBytes + Math.max(0, this.#rm.reader.size() - 4);
    if (size <= this.#maxRecordBytes) return false;
    this.#limiter.warn(this.#log, 'rpc-record-too-large', this.#peer.address, 'RPC record too large; closing the connection', {
      limit: this.#maxRecordBytes,
      received: size,
    });
    this.#stopping = true;
    this.#socket.destroy();
    return true;
  }

  #onRecord(rec: XdrReader): void {
    const bytes = rec.size();
    const d = decodeCall(rec, this.#peer);
    if (d.kind === 'call') this.#dispatch({ ...d.call, local: this.#local, signal: this.#gone.signal }, bytes);
    else if (d.xid !== undefined) this.#sendResult(d.xid, d.result);
  }

  #dispatch(call: RpcCall, bytes: number): void {
    const result = callProgram(this.#programs, call, this.#log);
    if (!(result instanceof Promise)) {
      this.#sendResult(call.xid, result);
      return;
    }
    this.#inflight++;
    this.#inflightBytes += bytes;
    if (this.#inflight >= this.#maxInflight || this.#inflightBytes > this.#maxInflightBytes) this.#pause();
    result
      .catch((err: unknown): RpcResult => {
        this.#log.error('RPC handler failed', { prog: call.prog, proc: call.proc, err: errorText(err) });
        return { kind: 'system-err' };
      })
      .then((r) => this.#sendResult(call.xid, r))
      .finally(() => {
        this.#inflight--;
        this.#inflightBytes -= bytes;
        this.#maybeResume();
        if (this.#inflight === 0) for (const r of this.#idle.splice(0)) r();
      });
  }

  #sendResult(xid: number, r: RpcResult): void {
    const { head, body } = encodeResult(xid, r);
    this.#send(head, body, r.kind === 'success' ? r.sent : undefined);
  }

  /** `head` starts with 4 bytes reserved for the record mark. */
  #send(head: Buffer, body: Uint8Array[], sent?: () => void): void {
    const s = this.#socket;
    if (s.destroyed) {
      sent?.();
      return;
    }
    let len = head.length - 4;
    for (const b of body) len += b.length;
    head.writeUInt32BE((0x80000000 | len) >>> 0, 0);
    this.#tickCork.hold();
    const parts = body.filter((b) => b.length > 0);
    const done = sent && ((): void => sent());
    s.write(head, parts.length === 0 ? done : undefined);
    parts.forEach((b, i) => s.write(b, i === parts.length - 1 ? done : undefined));
    if (s.writableLength > SEND_BUFFER_LIMIT) this.#pause();
  }

  #pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#socket.pause();
  }

  #maybeResume(): void {
    if (!this.#paused || this.#stopping) return;
    if (this.#inflight < this.#maxInflight && this.#inflightBytes <= this.#maxInflightBytes && this.#socket.writableLength <= SEND_BUFFER_LIMIT) {
      this.#paused = false;
      this.#socket.resume();
    }
  }
}

/** `::ffff:127.0.0.1` -> `127.0.0.1`, so IPv4 rules match dual-stack sockets. */
export function normaliseAddress(a: string): string {
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}
