/**
 * ReplyWriter: the one way replies of an NBD connection reach its socket, in the order they are
 * handed over. Replies are buffers written through the socket (Node's stream), or a header plus
 * a stretch of a file (READs of raw file exports): on a plain connection sent by the kernel
 * (sendfile, native/send-file.ts), on rebound's TLS record stream sealed straight from the file
 * (tls/record-stream.ts sendFile).
 *
 * Design notes:
 *  - Bytes of two replies never interleave. Buffer replies are written at once (corked per tick,
 *    one writev) unless a file send is running or waiting; then they queue behind it. On rebound's
 *    TLS record stream a tick's buffer replies are collected here instead and handed over in one
 *    sendChunks call (sealed together, without the stream's per-chunk bookkeeping); the batch
 *    leaves before any file reply that follows it.
 *  - A file send bypasses the stream's own buffer (sendfile writes to the descriptor from another
 *    thread; the record stream queues sealed records itself), so it starts only when the stream
 *    has nothing unwritten (`writableLength` 0: the bytes before it are in the kernel or sealed in
 *    order), and the stream is written again only after it ended. One file send at a time per
 *    connection.
 *  - While the page cache serves the file (util/file-io.ts's switch for synchronous reads), a file
 *    reply is sent at once on the event loop, without waiting for room in the socket; what does not
 *    fit, or all of it when the switch is off, goes on the thread pool.
 *  - On a plain connection, a reader that takes nothing for STALL_MS ends the file send early; the rest of that reply is
 *    then read into a buffer (`readRest`) and written through the stream, whose backpressure the
 *    transmission loop already honours (no pool thread waits on a client that stopped reading).
 *    The record stream never stalls a thread: sealed records wait in the raw socket's buffer, and
 *    the reply counts until the socket took them, like any write.
 *  - A socket error during a file send (the client left) destroys the socket; the reply counts as
 *    handed over, as a write to a destroyed stream does. The file ending early (truncated behind
 *    rebound's back) cannot be answered within the stream: the connection is dropped and logged.
 */
import type { Duplex } from 'node:stream';
import type { FileSpan } from '../blockdev/types.js';
import { fileSender, FileShrank, socketDescriptor, type FileSender } from '../native/send-file.js';
import { TlsRecordStream } from '../tls/record-stream.js';
import type { Logger } from '../util/log.js';
import { syncFileRead } from '../util/file-io.js';
import { TickCork } from '../util/tick-cork.js';

/** How long a file send waits for a reader that takes no bytes before the stream takes over. */
export const STALL_MS = 10;

interface BufferReply {
  kind: 'buffers';
  buffers: Buffer[];
  written: () => void;
}

interface FileReply {
  kind: 'file';
  header: Buffer;
  span: FileSpan;
  length: number;
  /** Reads `length` bytes of the reply's data, starting `from` bytes into it (after a stall). */
  readRest: (from: number, length: number) => Promise<Buffer>;
  written: () => void;
}

type Reply = BufferReply | FileReply;

/** How one connection sends file replies. */
export interface FileReplies {
  /**
   * Sends `header` then `length` bytes of the file at `span`; resolves with how many bytes of both
   * went out: all of them, or fewer when the reader stalled (the caller sends the rest). Rejects
   * with FileShrank when the file ended early, or with the socket's error.
   */
  send(header: Buffer, span: FileSpan, length: number): Promise<number>;
}

/** File replies on a plain socket: sendfile at once while the page cache serves it, else on the thread pool. */
class SocketFileReplies implements FileReplies {
  readonly #fd: number;
  readonly #sender: FileSender;

  constructor(fd: number, sender: FileSender) {
    this.#fd = fd;
    this.#sender = sender;
  }

  async send(header: Buffer, span: FileSpan, length: number): Promise<number> {
    // While the page cache serves the file, at once: no thread hand-off (most replies end here).
    const sent = syncFileRead(length, () => this.#sender.sendNow(this.#fd, header, span.fd, span.position, length)) ?? 0;
    if (sent === header.length + length) return sent;
    const skip = Math.max(0, sent - header.length);
    const result = await this.#sender.send(this.#fd, header.subarray(Math.min(sent, header.length)), span.fd, span.position + skip, length - skip, STALL_MS);
    return sent + result.sent;
  }
}

/** File replies on rebound's TLS record stream: records sealed from the file (tls/record-stream.ts sendFile). */
class RecordStreamFileReplies implements FileReplies {
  readonly #stream: TlsRecordStream;

  constructor(stream: TlsRecordStream) {
    this.#stream = stream;
  }

  async send(header: Buffer, span: FileSpan, length: number): Promise<number> {
    try {
      await this.#stream.sendFile(header, span.fd, span.position, length);
    } catch (err) {
      throw (err as NodeJS.ErrnoException).code === 'ENODATA' ? new FileShrank() : err;
    }
    return header.length + length;
  }
}

/** How `socket` can send file replies, or undefined (Node's TLS socket, no addon): then READs are read. */
export function fileRepliesFor(socket: Duplex): FileReplies | undefined {
  const fd = socketDescriptor(socket);
  const sender = fileSender();
  if (fd !== undefined && sender) return new SocketFileReplies(fd, sender);
  if (socket instanceof TlsRecordStream && socket.canSendFiles) return new RecordStreamFileReplies(socket);
  return undefined;
}

export class ReplyWriter {
  readonly #socket: Duplex;
  readonly #cork: TickCork;
  readonly #log: Logger;
  readonly #files: FileReplies | undefined;
  /** Replies waiting behind a file send (running or waiting for the stream to empty). */
  readonly #queue: Reply[] = [];
  #fileBusy = false;
  #waitingForStream = false;
  /** The socket when it is rebound's TLS record stream: buffer replies then go in per-tick batches. */
  readonly #records: TlsRecordStream | undefined;
  /** This tick's buffer replies for #records, and their `written` callbacks. */
  #batch: Buffer[] = [];
  #batchBytes = 0;
  #batchWritten: (() => void)[] = [];

  /** `files`: how this socket sends file replies (fileRepliesFor), when it can. */
  constructor(socket: Duplex, log: Logger, files?: FileReplies) {
    this.#socket = socket;
    this.#cork = new TickCork(socket);
    this.#log = log;
    this.#files = files;
    this.#records = socket instanceof TlsRecordStream ? socket : undefined;
  }

  /** Whether `sendFile` may be used on this connection. */
  get canSendFiles(): boolean {
    return this.#files !== undefined;
  }

  /** Reply bytes handed over and not yet taken by the kernel (file replies excepted). */
  get unsentBytes(): number {
    return this.#records ? this.#records.unsentBytes + this.#batchBytes : this.#socket.writableLength;
  }

  /** Queues a reply of buffers; `written` runs once the kernel has all of them (or the socket is gone). */
  send(buffers: Buffer[], written: () => void): void {
    if (this.#queue.length > 0 || this.#fileBusy) this.#queue.push({ kind: 'buffers', buffers, written });
    else this.#write(buffers, written);
  }

  /**
   * Queues a reply of `header` then `length` bytes of the file at `span`; resolves once it was
   * handed over (or the socket is gone). The span must stay valid until then.
   */
  sendFile(header: Buffer, span: FileSpan, length: number, readRest: FileReply['readRest']): Promise<void> {
    return new Promise((written) => {
      this.#queue.push({ kind: 'file', header, span, length, readRest, written });
      this.#pump();
    });
  }

  #write(buffers: Buffer[], written: () => void): void {
    const s = this.#socket;
    if (s.destroyed) return written();
    if (this.#records) {
      if (this.#batchWritten.length === 0) process.nextTick(() => this.#sendBatch());
      for (const b of buffers) {
        this.#batch.push(b);
        this.#batchBytes += b.length;
      }
      this.#batchWritten.push(written);
      return;
    }
    this.#cork.hold();
    buffers.forEach((b, i) => s.write(b, i === buffers.length - 1 ? written : undefined));
  }

  /** Hands this tick's batch of buffer replies to the record stream (at the end of the tick, or before a file reply). */
  #sendBatch(): void {
    const written = this.#batchWritten;
    if (written.length === 0) return;
    const chunks = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    this.#batchWritten = [];
    this.#records!.sendChunks(chunks, () => {
      for (const w of written) w();
    });
  }

  /** Starts what the queue allows: buffer replies up to the next file reply, which waits for an empty stream. */
  #pump(): void {
    while (this.#queue.length > 0 && !this.#fileBusy) {
      const next = this.#queue[0]!;
      if (next.kind === 'buffers') {
        this.#queue.shift();
        this.#write(next.buffers, next.written);
        continue;
      }
      if (this.#socket.destroyed) {
        this.#queue.shift();
        next.written();
        continue;
      }
      if (this.#socket.writableLength > 0) {
        this.#waitForStream();
        return;
      }
      this.#sendBatch();
      this.#queue.shift();
      this.#fileBusy = true;
      void this.#sendFile(next).finally(() => {
        this.#fileBusy = false;
        next.written();
        this.#pump();
      });
    }
  }

  /** Calls #pump again once what the stream holds has reached the kernel. */
  #waitForStream(): void {
    if (this.#waitingForStream) return;
    this.#waitingForStream = true;
    // An empty write's callback runs after every earlier write's (the stream keeps order).
    this.#socket.write(Buffer.alloc(0), () => {
      this.#waitingForStream = false;
      this.#pump();
    });
  }

  /** Sends one file reply; resolves once all of it is in the kernel (or the socket is gone). */
  async #sendFile(r: FileReply): Promise<void> {
    const { header, span, length } = r;
    let sent: number;
    try {
      sent = await this.#files!.send(header, span, length);
      if (sent === header.length + length) return;
    } catch (err) {
      if (err instanceof FileShrank) this.#log.error('exported file shrank during a read; closing the connection', { err: err.message });
      this.#socket.destroy(); // otherwise the client left (EPIPE, ECONNRESET): nothing more to send
      return;
    }
    // The reader stalled: the rest goes through the stream, which waits for it without a thread.
    try {
      const rest: Buffer[] = [];
      if (sent < header.length) rest.push(header.subarray(sent));
      const from = Math.max(0, sent - header.length);
      if (from < length) rest.push(await r.readRest(from, length - from));
      await new Promise<void>((resolve) => this.#write(rest, resolve));
    } catch (err) {
      if (!this.#socket.destroyed) this.#log.error('reading the rest of a reply failed; closing the connection', { err: String(err) });
      this.#socket.destroy();
    }
  }
}
