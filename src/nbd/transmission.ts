/**
 * The transmission phase of one NBD connection: read requests, run them against the export's
 * device concurrently, send replies as they complete (out of order).
 *
 * Invariants:
 *  - Replies reach the socket through one ReplyWriter (reply-writer.ts), in the order they are
 *    handed over, so bytes of two replies never interleave. Large READs of a device that can name
 *    their file (a raw image) are sent from the file, not read: sendfile on a plain connection,
 *    records sealed from the file on rebound's TLS record stream.
 *  - Memory per connection is bounded: a request counts from the moment its header is read until
 *    its reply has been handed to the kernel (the socket's write callback), so unsent replies
 *    count too. At most `maxInflight` requests count at once, their payload bytes (READ lengths,
 *    WRITE payloads) stay within `maxInflightBytes` (one request larger than that runs alone), and
 *    no request is read while the socket holds over SEND_BUFFER_LIMIT of unsent replies. A client
 *    that does not read its replies is therefore not fed: qemu-nbd keeps 16 requests in flight,
 *    nbdkit as many as it has threads, for the same reason.
 *  - Memory of the daemon is bounded too: the same payload bytes are taken from `budget`, shared
 *    by every NBD connection and NFS READ/WRITE (util/byte-budget.ts, FIFO). A request that cannot
 *    get its bytes waits, and no further request of its connection is read meanwhile
 *    (backpressure); a client that leaves while waiting gives up its place in the queue.
 *  - When the client goes away, requests still queued below (QoS, locks) are cancelled through
 *    their AbortSignal; the device layers honour it where waiting is possible.
 *  - A failed request gets an error reply and the connection carries on. A WRITE over MAX_PAYLOAD
 *    (64 MiB, as nbdkit) has its payload read and dropped (never held) and gets EOVERFLOW. Only
 *    framing errors (bad magic, a WRITE payload over OVERSIZE_SKIP_MAX, too large to skip) drop the
 *    connection, since the stream cannot be resynced.
 *  - After structured replies are negotiated, READ and BLOCK_STATUS never get simple replies, and
 *    errors carry a short message in an ERROR chunk.
 *  - DISC and graceful stop: no new requests are started; in-flight ones finish and are answered,
 *    then the socket is closed. Requests that arrive during a stop get ESHUTDOWN.
 */
import type { Duplex } from 'node:stream';
import type { CheckedDevice } from '../blockdev/checked.js';
import type { Extent } from '../blockdev/types.js';
import type { Logger } from '../util/log.js';
import type { ByteReader } from './byte-reader.js';
import { toNbdError } from './error-map.js';
import type { Negotiated } from './handshake.js';
import {
  allocDataChunk,
  allocSimpleReadReply,
  decodeRequestHeader,
  encodeDataChunkHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeSimpleReply,
  type RequestHeader,
  type StatusDescriptor,
} from './messages.js';
import {
  Cmd,
  CmdFlag,
  commandName,
  MAX_EXTENT_DESCRIPTORS,
  MAX_PAYLOAD,
  NbdErrno,
  REQUEST_HEADER_BYTES,
  STATE_HOLE,
  STATE_ZERO,
  TFlag,
} from './protocol.js';
import { ProtocolViolation } from './handshake.js';
import { BlockError } from '../errors.js';
import type { ReplyBufferPool } from './reply-buffers.js';
import type { ByteBudget } from '../util/byte-budget.js';
import { fileRepliesFor, ReplyWriter } from './reply-writer.js';

const WRITE_COMMANDS = new Set<number>([Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES]);

/** Reads at least this long are answered sparsely (hole chunks for zero extents). */
const SPARSE_READ_MIN = 64 * 1024;
/** Reads at least this long of a device that can name their file (raw images) are sent from it (sendfile). */
const FILE_REPLY_MIN = 64 * 1024;
/** Stop reading requests while this much reply data waits in the socket. */
const SEND_BUFFER_LIMIT = 32 * 1024 * 1024;
/** A WRITE payload over MAX_PAYLOAD up to this size is skipped and refused; beyond, the connection drops (as nbdkit). */
const OVERSIZE_SKIP_MAX = 2 * MAX_PAYLOAD;
/** Default budget of payload bytes of the requests running on one connection. */
export const DEFAULT_MAX_INFLIGHT_BYTES = 64 * 1024 * 1024;

export interface TransmissionOptions {
  maxInflight: number;
  /** Payload bytes of running requests per connection (default DEFAULT_MAX_INFLIGHT_BYTES). */
  maxInflightBytes?: number;
  /** Where READ reply buffers come from and go back to (shared by the server's connections). */
  buffers: ReplyBufferPool;
  /** The daemon's total of payload bytes in flight (shared by all connections and NFS). */
  budget: ByteBudget;
}

/** One request counted against the limits: released once its reply left (or the socket is gone). */
interface Hold {
  /** The reply is queued on the socket (or the request ended without one). */
  queued: boolean;
  release(): void;
}

export class Transmission {
  readonly #socket: Duplex;
  readonly #reader: ByteReader;
  readonly #session: Negotiated;
  readonly #device: CheckedDevice;
  readonly #log: Logger;
  readonly #maxInflight: number;
  readonly #maxInflightBytes: number;
  readonly #gone = new AbortController();
  /** Aborted by close() or the client leaving: ends a wait for the daemon's budget. */
  readonly #stop = new AbortController();
  readonly #budget: ByteBudget;
  readonly #holds = new Set<Hold>();
  readonly #flags: number;
  readonly #buffers: ReplyBufferPool;
  readonly #alloc: (size: number) => Buffer;
  readonly #replies: ReplyWriter;
  readonly #canReadNow: boolean;
  #inflight = 0;
  #inflightBytes = 0;
  #stopping = false;
  #wake: (() => void) | undefined;
  #idle: (() => void) | undefined;

  /** `device` is the export opened for this connection (its own gate; the caller closes it). */
  constructor(socket: Duplex, reader: ByteReader, session: Negotiated, device: CheckedDevice, log: Logger, opts: TransmissionOptions) {
    this.#socket = socket;
    this.#replies = new ReplyWriter(socket, log, fileRepliesFor(socket));
    this.#reader = reader;
    this.#session = session;
    this.#device = device;
    this.#canReadNow = device.canReadNow;
    this.#log = log;
    this.#maxInflight = opts.maxInflight;
    this.#maxInflightBytes = opts.maxInflightBytes ?? DEFAULT_MAX_INFLIGHT_BYTES;
    this.#flags = session.transmissionFlags;
    this.#buffers = opts.buffers;
    this.#alloc = (size) => this.#buffers.acquire(size);
    this.#budget = opts.budget;
    socket.on('drain', () => this.#wakeUp());
    // A client that left: its queued work is cancelled, and the read loop stops even while it waits
    // for a 'drain' that a closed socket never emits (a client that stopped reading, then left).
    socket.once('close', () => {
      this.#gone.abort(new BlockError('ESHUTDOWN', 'the client went away'));
      this.#stopping = true;
      this.#stop.abort(new StopRequested());
      // Replies that will never be sent: their requests no longer count (running ones release
      // when they end).
      for (const h of [...this.#holds]) if (h.queued) h.release();
      this.#wakeUp();
    });
  }

  get inflight(): number {
    return this.#inflight;
  }

  /** Runs until the client disconnects, sends DISC, or close() is called. Then drains in-flight requests. */
  async run(): Promise<void> {
    try {
      for (;;) {
        // Each await below is taken only when there is something to wait for: a request already
        // buffered costs no promise (4 KiB random reads: about 1 us of CPU less per request).
        if (this.#mustWaitForSlot()) await this.#waitForSlot();
        const head = this.#reader.tryTake(REQUEST_HEADER_BYTES) ?? (await this.#reader.readExact(REQUEST_HEADER_BYTES));
        const req = decodeRequestHeader(head);
        if (!req) throw new ProtocolViolation('bad request magic');
        if (req.type === Cmd.WRITE && req.length > MAX_PAYLOAD) {
          if (req.length > OVERSIZE_SKIP_MAX) throw new ProtocolViolation(`WRITE payload of ${req.length} bytes is too large to skip`);
          await this.#reader.skip(req.length); // read and dropped: #execute answers EOVERFLOW
          this.#start(req, undefined, 0, 0);
          continue;
        }
        const cost = payloadBytes(req);
        if (!this.#bytesFit(cost)) await this.#waitForBytes(cost);
        const granted = cost > 0 ? this.#budget.tryAcquire(cost) || (await this.#acquireTotal(cost)) : 0;
        let payload: Buffer | undefined;
        try {
          payload = req.type === Cmd.WRITE ? (this.#reader.tryTake(req.length) ?? (await this.#reader.readExact(req.length))) : undefined;
        } catch (err) {
          this.#budget.release(granted);
          throw err;
        }
        if (req.type === Cmd.DISC) {
          this.#budget.release(granted);
          this.#log.debug('client sent DISC');
          break;
        }
        this.#start(req, payload, cost, granted);
      }
    } finally {
      await this.#drain();
    }
  }

  /**
   * Graceful stop: no new requests start. Resolves once in-flight requests are answered; the
   * caller then closes the socket, which ends run().
   */
  close(): Promise<void> {
    this.#stopping = true;
    this.#stop.abort(new StopRequested());
    this.#wakeUp();
    return this.#drain();
  }

  #start(req: RequestHeader, payload: Buffer | undefined, cost: number, granted: number): void {
    this.#inflight++;
    this.#inflightBytes += cost;
    let released = false;
    const hold: Hold = {
      queued: false,
      release: () => {
        if (released) return;
        released = true;
        this.#holds.delete(hold);
        this.#inflight--;
        this.#inflightBytes -= cost;
        this.#budget.release(granted);
        this.#wakeUp();
        if (this.#inflight === 0) {
          const idle = this.#idle;
          this.#idle = undefined;
          idle?.();
        }
      },
    };
    this.#holds.add(hold);
    if (req.type === Cmd.READ && this.#canReadNow && this.#readNow(req, hold.release)) {
      hold.queued = true;
      return;
    }
    this.#execute(req, payload, hold.release)
      .catch((err) => {
        this.#log.error('reply failed', { err: String(err) });
        hold.release();
      })
      .finally(() => {
        hold.queued = true;
        if (this.#socket.destroyed) hold.release();
      });
  }

  /** Takes `cost` bytes of the daemon's budget, waiting in line; a stop or the client leaving ends the wait. */
  async #acquireTotal(cost: number): Promise<number> {
    const now = this.#budget.tryAcquire(cost);
    if (now > 0) return now;
    try {
      return await this.#budget.acquire(cost, this.#stop.signal);
    } catch {
      // A graceful stop: the request is still answered (ESHUTDOWN), holding nothing.
      if (this.#gone.signal.aborted) throw new StopRequested();
      return 0;
    }
  }

  /** Runs one request and queues its reply; `sent` runs once the socket has taken the reply. */
  async #execute(req: RequestHeader, payload: Buffer | undefined, sent: () => void): Promise<void> {
    try {
      if (this.#stopping) throw new BlockError('ESHUTDOWN', 'server is shutting down');
      // On a read-only export the write path is refused for that reason first (EPERM), whatever
      // its flags: it is the answer that tells the client what is wrong.
      if (this.#flags & TFlag.READ_ONLY && WRITE_COMMANDS.has(req.type)) {
        throw new BlockError('EROFS', `${commandName(req.type)} refused: the export is read-only`);
      }
      this.#checkFlags(req);
      if (req.offset < 0) throw new BlockError('EINVAL', 'offset beyond 2^53');
      switch (req.type) {
        case Cmd.READ:
          return await this.#read(req, sent);
        case Cmd.WRITE:
          if (!payload) throw new BlockError('EOVERFLOW', `WRITE of ${req.length} bytes exceeds the maximum request size (${MAX_PAYLOAD} bytes)`);
          await this.#device.write(payload, req.offset, { fua: (req.flags & CmdFlag.FUA) !== 0, signal: this.#gone.signal });
          break;
        case Cmd.FLUSH:
          await this.#device.flush({ signal: this.#gone.signal });
          break;
        case Cmd.TRIM:
          await this.#device.trim(req.offset, req.length, { fua: (req.flags & CmdFlag.FUA) !== 0, signal: this.#gone.signal });
          break;
        case Cmd.WRITE_ZEROES:
          await this.#device.zero(req.offset, req.length, {
            fua: (req.flags & CmdFlag.FUA) !== 0,
            noHole: (req.flags & CmdFlag.NO_HOLE) !== 0,
            fast: (req.flags & CmdFlag.FAST_ZERO) !== 0,
            signal: this.#gone.signal,
          });
          break;
        case Cmd.CACHE:
          // Advisory prefetch: check the range, nothing else to do for now.
          if (req.offset + req.length > this.#device.size) throw new BlockError('EINVAL', 'cache request past the end');
          break;
        case Cmd.BLOCK_STATUS:
          return await this.#blockStatus(req, sent);
        default:
          throw new BlockError('EINVAL', `unknown command ${req.type}`);
      }
      this.#send(sent, encodeSimpleReply(NbdErrno.OK, req.cookie));
    } catch (err) {
      this.#sendError(req, err, sent);
    }
  }

  #checkFlags(req: RequestHeader): void {
    let allowed = 0;
    if (this.#flags & TFlag.SEND_FUA) allowed |= CmdFlag.FUA;
    switch (req.type) {
      case Cmd.READ:
        if (this.#session.structuredReplies) allowed |= CmdFlag.DF;
        break;
      case Cmd.WRITE_ZEROES:
        allowed |= CmdFlag.NO_HOLE;
        if (this.#flags & TFlag.SEND_FAST_ZERO) allowed |= CmdFlag.FAST_ZERO;
        break;
      case Cmd.BLOCK_STATUS:
        allowed |= CmdFlag.REQ_ONE;
        break;
    }
    if (req.flags & ~allowed) {
      throw new BlockError('EINVAL', `flags 0x${req.flags.toString(16)} not valid for ${commandName(req.type)}`);
    }
  }

  async #read(req: RequestHeader, sent: () => void): Promise<void> {
    const { cookie, offset, length } = req;
    const caps = this.#device.capabilities();
    const structured = this.#session.structuredReplies;
    this.#checkReadLength(length);
    if (!structured || length < SPARSE_READ_MIN || (req.flags & CmdFlag.DF) || !caps.canExtents) {
      return this.#readWhole(req, structured, sent);
    }
    // Sparse read: hole chunks where the device knows the range reads as zero.
    const extents = await this.#allExtents(offset, length);
    if (extents.length === 1 && !extents[0]!.zero) return this.#readWhole(req, true, sent); // all data: one chunk
    const pooled: Buffer[] = [];
    // allSettled, not all: a buffer goes back to the pool only when no read still fills it.
    const settled = await Promise.allSettled(
      extents.map(async (e, i) => {
        const last = i === extents.length - 1;
        if (e.zero) return encodeHoleChunk(cookie, e.offset, e.length, last);
        const { buf, data } = allocDataChunk(cookie, e.offset, e.length, last, this.#alloc);
        pooled.push(buf);
        await this.#device.read(data, e.offset, { signal: this.#gone.signal });
        return buf;
      }),
    );
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      for (const b of pooled) this.#buffers.release(b);
      throw failed.reason;
    }
    this.#sendPooled(sent, settled.map((r) => (r as PromiseFulfilledResult<Buffer>).value), pooled);
  }

  /**
   * A small READ answered at once, without a promise, when the device has the bytes at hand
   * (readNow: a raw image's pages in the page cache); false when it must go the ordinary way,
   * which also answers every error. 4 KiB random reads: about 1 us of CPU less per request.
   */
  #readNow(req: RequestHeader, sent: () => void): boolean {
    const { length } = req;
    // Below both thresholds: such a read is never sparse and never sent from a file.
    if (this.#stopping || length === 0 || length >= Math.min(SPARSE_READ_MIN, FILE_REPLY_MIN) || req.offset < 0) return false;
    try {
      this.#checkFlags(req);
    } catch {
      return false;
    }
    const { buf, data } = this.#allocReadReply(req, this.#session.structuredReplies);
    if (!this.#device.readNow(data, req.offset)) {
      this.#buffers.release(buf);
      return false;
    }
    this.#sendPooled(sent, [buf]);
    return true;
  }

  /** A READ answered with all its bytes: one data chunk (structured) or a simple reply. */
  async #readWhole(req: RequestHeader, structured: boolean, sent: () => void): Promise<void> {
    if (req.length >= FILE_REPLY_MIN && this.#replies.canSendFiles && (await this.#readFromFile(req, structured, sent))) return;
    const { buf, data } = this.#allocReadReply(req, structured);
    try {
      await this.#device.read(data, req.offset, { signal: this.#gone.signal });
    } catch (err) {
      this.#buffers.release(buf);
      throw err;
    }
    this.#sendPooled(sent, [buf]);
  }

  /** A pooled reply buffer for all of a READ's bytes: its header, and `data` to read them into. */
  #allocReadReply(req: RequestHeader, structured: boolean): { buf: Buffer; data: Buffer } {
    return structured
      ? allocDataChunk(req.cookie, req.offset, req.length, true, this.#alloc)
      : allocSimpleReadReply(req.cookie, req.length, this.#alloc);
  }

  /** Sends a READ's bytes from the device's file when it can name one (sendfile); false when it cannot. */
  #readFromFile(req: RequestHeader, structured: boolean, sent: () => void): Promise<boolean> {
    const header = structured ? encodeDataChunkHeader(req.cookie, req.offset, req.length, true) : encodeSimpleReply(NbdErrno.OK, req.cookie);
    const readRest = async (from: number, length: number): Promise<Buffer> => {
      const rest = Buffer.allocUnsafe(length);
      await this.#device.read(rest, req.offset + from, { signal: this.#gone.signal });
      return rest;
    };
    return this.#device.withFileSpan(req.offset, req.length, async (span) => {
      await this.#replies.sendFile(header, span, req.length, readRest);
      sent();
    });
  }

  #checkReadLength(length: number): number {
    // Checked here, before allocating the reply buffer; CheckedDevice checks again.
    if (length > this.#device.capabilities().blockSize.max) {
      throw new BlockError('EOVERFLOW', `read of ${length} bytes exceeds the maximum request size`);
    }
    if (length === 0) throw new BlockError('EINVAL', 'zero-length read');
    return length;
  }

  async #allExtents(offset: number, length: number): Promise<Extent[]> {
    const out: Extent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const answer = await this.#device.extents(pos, end - pos);
      for (const e of answer) {
        const last = out[out.length - 1];
        if (last && last.zero === e.zero) last.length += e.length;
        else out.push({ ...e });
      }
      pos = answer[answer.length - 1]!.offset + answer[answer.length - 1]!.length;
    }
    return out;
  }

  async #blockStatus(req: RequestHeader, sent: () => void): Promise<void> {
    const contexts = this.#session.metaContexts;
    if (contexts.size === 0) throw new BlockError('EINVAL', 'no metadata context was negotiated');
    if (req.length === 0) throw new BlockError('EINVAL', 'zero-length block status request');
    const extents = await this.#device.extents(req.offset, req.length);
    const reqOne = (req.flags & CmdFlag.REQ_ONE) !== 0;
    const take = reqOne ? extents.slice(0, 1) : extents.slice(0, MAX_EXTENT_DESCRIPTORS);
    const descriptors: StatusDescriptor[] = take.map((e) => ({
      length: e.length,
      flags: (e.hole ? STATE_HOLE : 0) | (e.zero ? STATE_ZERO : 0),
    }));
    const ids = [...contexts.keys()];
    this.#send(sent, ...ids.map((id, i) => encodeBlockStatusChunk(req.cookie, id, descriptors, i === ids.length - 1)));
  }

  #sendError(req: RequestHeader, err: unknown, sent: () => void): void {
    const { errno, message } = toNbdError(err);
    const fields = { cmd: commandName(req.type), offset: req.offset, length: req.length, errno, message };
    if (errno === NbdErrno.EIO) this.#log.warn('request failed', fields);
    else this.#log.debug('request refused', fields);
    if (this.#session.structuredReplies) this.#send(sent, encodeErrorChunk(req.cookie, errno, message));
    else this.#send(sent, encodeSimpleReply(errno, req.cookie));
  }

  /** Queues one reply (replies completed in the same tick leave in one writev: see ReplyWriter). */
  #send(sent: () => void, ...buffers: Buffer[]): void {
    this.#replies.send(buffers, sent);
  }

  /** Like #send; `pooled` buffers (default: all) return to the pool once the kernel has them. */
  #sendPooled(sent: () => void, buffers: Buffer[], pooled: Buffer[] = buffers): void {
    this.#replies.send(buffers, () => {
      for (const b of pooled) this.#buffers.release(b);
      sent();
    });
  }

  /** Whether the next request must wait (too many running, too much unsent) or the loop must stop. */
  #mustWaitForSlot(): boolean {
    return this.#stopping || this.#inflight >= this.#maxInflight || this.#replies.unsentBytes > SEND_BUFFER_LIMIT;
  }

  async #waitForSlot(): Promise<void> {
    while (!this.#stopping && this.#mustWaitForSlot()) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    if (this.#stopping) throw new StopRequested();
  }

  /** Whether `cost` more payload bytes fit the connection's budget now (alone, anything fits). */
  #bytesFit(cost: number): boolean {
    return this.#stopping || this.#inflight === 0 || this.#inflightBytes + cost <= this.#maxInflightBytes;
  }

  /** Waits until `cost` more payload bytes fit the connection's budget. */
  async #waitForBytes(cost: number): Promise<void> {
    while (!this.#bytesFit(cost)) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  #wakeUp(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #drain(): Promise<void> {
    if (this.#inflight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#idle;
      this.#idle = () => {
        previous?.();
        resolve();
      };
    });
  }
}

/** The payload bytes a request holds while it runs: its READ buffer or its WRITE data. */
function payloadBytes(req: RequestHeader): number {
  return req.type === Cmd.READ || req.type === Cmd.WRITE ? Math.min(req.length, MAX_PAYLOAD + 1) : 0; // an oversized READ is refused before it allocates
}

/** Thrown inside run() when close() was called while waiting; ends the loop quietly. */
export class StopRequested extends Error {
  constructor() {
    super('stop requested');
    this.name = 'StopRequested';
  }
}
