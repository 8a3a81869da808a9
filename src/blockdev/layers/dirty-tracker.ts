/**
 * DirtyTracker: remembers which parts of a device were written while tracking is on, in units of
 * `granule` bytes, so a migration copy can re-copy what changed behind it.
 *
 * A range is marked when its write completes, not when it starts: the copier clears a unit before
 * it reads it, so a write that completes after the clear marks it again (and is copied again),
 * and a write that completed before the clear is in what the copier reads. Nothing is missed.
 */
import { Layer } from '../layer.js';
import type { BlockDevice, IoOptions, WriteOptions, ZeroOptions } from '../types.js';

export class DirtyTracker extends Layer {
  readonly name = 'dirty-tracker';
  readonly granule: number;
  #dirty: Set<number> | undefined;
  readonly #waiters = new Set<() => void>();

  constructor(next: BlockDevice, granule: number) {
    super(next);
    this.granule = granule;
  }

  get tracking(): boolean {
    return this.#dirty !== undefined;
  }

  start(): void {
    this.#dirty ??= new Set();
  }

  stop(): void {
    this.#dirty = undefined;
  }

  get dirtyUnits(): number {
    return this.#dirty?.size ?? 0;
  }

  mark(offset: number, length: number): void {
    if (!this.#dirty || length <= 0) return;
    const last = Math.floor((offset + length - 1) / this.granule);
    for (let u = Math.floor(offset / this.granule); u <= last; u++) this.#dirty.add(u);
    for (const w of [...this.#waiters]) w();
  }

  /** Resolves when some unit is dirty (at once if one is); rejects when `signal` aborts. */
  whenDirty(signal?: AbortSignal): Promise<void> {
    if (this.dirtyUnits > 0) return Promise.resolve();
    // An 'abort' event that already fired never fires again: waiting for it would hang.
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        this.#waiters.delete(wake);
        signal?.removeEventListener('abort', onAbort);
      };
      const wake = (): void => {
        cleanup();
        resolve();
      };
      const onAbort = (): void => {
        cleanup();
        reject(signal!.reason);
      };
      this.#waiters.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  isDirty(unit: number): boolean {
    return this.#dirty?.has(unit) ?? false;
  }

  /** Clears a unit before it is copied; true if it was dirty. */
  clear(unit: number): boolean {
    return this.#dirty?.delete(unit) ?? false;
  }

  /** The dirty units now, sorted (the set keeps changing). */
  snapshot(): number[] {
    return [...(this.#dirty ?? [])].sort((a, b) => a - b);
  }

  #after(p: Promise<void>, offset: number, length: number): Promise<void> {
    // A failed write may still have changed part of the range: mark it either way.
    return p.then(
      () => this.mark(offset, length),
      (err: unknown) => {
        this.mark(offset, length);
        throw err;
      },
    );
  }

  write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return this.#after(this.next.write(src, offset, opts), offset, src.length);
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#after(this.next.trim(offset, length, opts), offset, length);
  }

  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#after(this.next.zero(offset, length, opts), offset, length);
  }

  flush(opts?: IoOptions): Promise<void> {
    return this.next.flush(opts);
  }
}
