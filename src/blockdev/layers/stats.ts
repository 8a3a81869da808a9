/**
 * StatsLayer: I/O counters of one export (operations, bytes, errors) and its recent write rate,
 * for the sessions report and metrics. Counting only; it changes nothing that passes through.
 */
import { Layer } from '../layer.js';
import type { BlockDevice, IoOptions, WriteOptions, ZeroOptions } from '../types.js';

export interface IoCounters {
  reads: number;
  writes: number;
  readBytes: number;
  writeBytes: number;
  trims: number;
  zeroes: number;
  flushes: number;
  errors: number;
  /** Bytes written per second, averaged over about the last minute. */
  writeRate: number;
}

const RATE_WINDOW_MS = 60_000;

export class StatsLayer extends Layer {
  readonly name = 'stats';
  readonly #c: Omit<IoCounters, 'writeRate'> = { reads: 0, writes: 0, readBytes: 0, writeBytes: 0, trims: 0, zeroes: 0, flushes: 0, errors: 0 };
  /** Write bytes per second-slot, for the rate window. */
  readonly #slots = new Map<number, number>();
  readonly #started = Date.now();

  constructor(next: BlockDevice) {
    super(next);
  }

  counters(): IoCounters {
    const now = Date.now();
    let bytes = 0;
    for (const [slot, n] of this.#slots) {
      if (slot * 1000 < now - RATE_WINDOW_MS) this.#slots.delete(slot);
      else bytes += n;
    }
    const windowS = Math.max(1, Math.min(RATE_WINDOW_MS, now - this.#started) / 1000);
    return { ...this.#c, writeRate: Math.round(bytes / windowS) };
  }

  #count<T>(p: Promise<T>): Promise<T> {
    return p.catch((err: unknown) => {
      this.#c.errors++;
      throw err;
    });
  }

  override read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    this.#c.reads++;
    this.#c.readBytes += dst.length;
    return this.#count(this.next.read(dst, offset, opts));
  }

  write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    this.#c.writes++;
    this.#c.writeBytes += src.length;
    const slot = Math.floor(Date.now() / 1000);
    this.#slots.set(slot, (this.#slots.get(slot) ?? 0) + src.length);
    return this.#count(this.next.write(src, offset, opts));
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    this.#c.trims++;
    return this.#count(this.next.trim(offset, length, opts));
  }

  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    this.#c.zeroes++;
    return this.#count(this.next.zero(offset, length, opts));
  }

  flush(opts?: IoOptions): Promise<void> {
    this.#c.flushes++;
    return this.#count(this.next.flush(opts));
  }
}
