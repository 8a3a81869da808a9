/**
 * RecordCoalescer: hands a TLS socket's decrypted data to a protocol reader in batches.
 *
 * Why: Node's TLS layer emits one 'data' event per TLS record, and NBD clients send every request
 * in its own record (libnbd, qemu), so over TLS each 28-byte request costs a full trip through the
 * stream machinery and the microtask queue, where a plain socket delivers a whole read(2) of
 * requests at once (measured with fio 4K randread qd32: 1 'data' event per request over TLS, 1
 * per ~18 in plain text). Records decrypted from one socket read arrive in one macrotask; this
 * collects them and emits them together on setImmediate, so the reader finds the next requests
 * already buffered. Chunks are passed on as they are (no copying).
 *
 * It offers what ByteReader uses of a stream: 'data', 'end', 'close', 'error', pause() and
 * resume(). Queued data is delivered before 'end', 'close' or 'error'.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';

export class RecordCoalescer extends EventEmitter {
  readonly #source: Duplex;
  #queue: Buffer[] = [];
  #scheduled = false;
  #paused = false;

  constructor(source: Duplex) {
    super();
    this.#source = source;
    source.on('data', (chunk: Buffer) => {
      this.#queue.push(chunk);
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => {
          this.#scheduled = false;
          this.#flush(false);
        });
      }
    });
    for (const ev of ['end', 'close', 'error'] as const) {
      source.on(ev, (arg?: unknown) => {
        this.#flush(true);
        this.emit(ev, arg);
      });
    }
  }

  /** Data received and not yet passed on. */
  get pending(): number {
    return this.#queue.reduce((n, c) => n + c.length, 0);
  }

  #flush(all: boolean): void {
    while (this.#queue.length > 0 && (all || !this.#paused)) this.emit('data', this.#queue.shift()!);
  }

  pause(): this {
    this.#paused = true;
    this.#source.pause();
    return this;
  }

  resume(): this {
    this.#paused = false;
    this.#source.resume();
    this.#flush(false);
    return this;
  }
}
