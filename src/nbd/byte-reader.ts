/**
 * ByteReader: turns a socket's 'data' chunks into exact-length reads for a protocol loop.
 *
 * `readExact(n)` resolves with exactly n bytes, zero-copy when they sit in one chunk. Only one read
 * may be pending at a time (protocol loops are sequential). When the stream ends or fails, the
 * pending and all later reads reject with `ConnectionClosed`. The socket is paused while more than
 * `highWaterMark` bytes are buffered and no read wants them, so a fast client cannot make us buffer
 * without bound.
 */
import type { Duplex } from 'node:stream';
import { listen } from '../util/listeners.js';

export class ConnectionClosed extends Error {
  constructor(message = 'connection closed') {
    super(message);
    this.name = 'ConnectionClosed';
  }
}

export class ByteReader {
  readonly #stream: Duplex;
  readonly #highWaterMark: number;
  #chunks: Buffer[] = [];
  #head = 0; // bytes of #chunks[0] already consumed
  #available = 0;
  #pending: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  #ended: Error | undefined;
  #paused = false;
  readonly #unlisten: () => void;

  constructor(stream: Duplex, highWaterMark = 64 * 1024 * 1024) {
    this.#stream = stream;
    this.#highWaterMark = highWaterMark;
    this.#unlisten = listen(stream, {
      data: (chunk: Buffer) => this.#push(chunk),
      end: () => this.#end(new ConnectionClosed('client closed the connection')),
      close: () => this.#end(new ConnectionClosed()),
      error: (err: Error) => this.#end(new ConnectionClosed(`connection error: ${err.message}`)),
    });
  }

  /**
   * Lets go of the stream (when the connection moves on to another reader, e.g. after STARTTLS):
   * no more listening, and later reads reject. Bytes not yet consumed are dropped.
   */
  detach(): void {
    this.#unlisten();
    this.#resume();
    this.#end(new ConnectionClosed('the connection moved to another reader'));
  }

  /** Bytes received and not yet consumed. */
  get available(): number {
    return this.#available;
  }

  readExact(n: number): Promise<Buffer> {
    if (this.#pending) return Promise.reject(new Error('ByteReader: concurrent reads'));
    if (this.#available >= n) return Promise.resolve(this.#take(n));
    if (this.#ended) return Promise.reject(this.#ended);
    this.#resume();
    return new Promise((resolve, reject) => {
      this.#pending = { n, resolve, reject };
    });
  }

  /**
   * Takes exactly n bytes now if they have all arrived, as readExact would, without a promise
   * (a protocol loop's fast path through what is already buffered); undefined otherwise.
   */
  tryTake(n: number): Buffer | undefined {
    if (this.#pending || this.#available < n) return undefined;
    return this.#take(n);
  }

  /** Reads and drops n bytes without holding them all in memory. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      const step = Math.min(left, 1024 * 1024);
      await this.readExact(step);
      left -= step;
    }
  }

  #push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#available += chunk.length;
    const p = this.#pending;
    if (p && this.#available >= p.n) {
      this.#pending = undefined;
      p.resolve(this.#take(p.n));
    }
    if (!this.#pending && this.#available > this.#highWaterMark) this.#pause();
  }

  #take(n: number): Buffer {
    this.#available -= n;
    const first = this.#chunks[0];
    if (first && first.length - this.#head >= n) {
      const out = first.subarray(this.#head, this.#head + n);
      this.#head += n;
      if (this.#head === first.length) {
        this.#chunks.shift();
        this.#head = 0;
      }
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.#chunks[0]!;
      const take = Math.min(c.length - this.#head, n - filled);
      c.copy(out, filled, this.#head, this.#head + take);
      filled += take;
      this.#head += take;
      if (this.#head === c.length) {
        this.#chunks.shift();
        this.#head = 0;
      }
    }
    return out;
  }

  #end(err: Error): void {
    if (this.#ended) return;
    this.#ended = err;
    const p = this.#pending;
    this.#pending = undefined;
    p?.reject(err);
  }

  #pause(): void {
    if (!this.#paused) {
      this.#paused = true;
      this.#stream.pause();
    }
  }

  #resume(): void {
    if (this.#paused) {
      this.#paused = false;
      this.#stream.resume();
    }
  }
}
