/**
 * FreezeLayer: a point-in-time view of a device that keeps being written (copy-before-write, as
 * QEMU's backup job does). While a freeze is active, the first write, trim or zero that touches a
 * unit the reader has not read yet first saves the unit's old content; the reader gets the saved
 * copy. So `rebound commit` stores what the disk held at the moment of the freeze (crash-consistent)
 * while the VM keeps running.
 *
 * Each unit has a lock taken by both sides: the writer (save, then write) and the reader (use the
 * saved copy, or read and mark the unit read). Saved copies live in memory until the reader takes
 * them; their total is reported (`savedBytes`) and bounded by what the VM writes during the freeze.
 */
import { BlockError } from '../../errors.js';
import { KeyedMutex } from '../../util/mutex.js';
import { allData } from '../emulate.js';
import { Layer } from '../layer.js';
import { ReadOnlyDevice } from '../base/read-only.js';
import type { BlockDevice, Extent, IoOptions, WriteOptions, ZeroOptions } from '../types.js';

interface Freeze {
  unit: number;
  saved: Map<number, Uint8Array>;
  read: Set<number>;
  savedBytes: number;
}

export class FreezeLayer extends Layer {
  readonly name = 'freeze';
  readonly #locks = new KeyedMutex<number>();
  #freeze: Freeze | undefined;
  #unguarded = 0;
  #unguardedDone: Array<() => void> = [];

  constructor(next: BlockDevice) {
    super(next);
  }

  get frozen(): boolean {
    return this.#freeze !== undefined;
  }

  /** The unit of the active freeze, if any. */
  get frozenUnit(): number | undefined {
    return this.#freeze?.unit;
  }

  get savedBytes(): number {
    return this.#freeze?.savedBytes ?? 0;
  }

  /**
   * Starts a point-in-time view in units of `unit` bytes (one at a time). Resolves once the writes
   * that started before the freeze (and so were not guarded) have finished: the view is theirs.
   */
  async freeze(unit: number): Promise<void> {
    if (this.#freeze) throw new Error('already frozen');
    this.#freeze = { unit, saved: new Map(), read: new Set(), savedBytes: 0 };
    if (this.#unguarded > 0) await new Promise<void>((r) => this.#unguardedDone.push(r));
  }

  thaw(): void {
    this.#freeze = undefined;
  }

  /** The reader will not need unit `u` (it is known unchanged): later writes need not save it. */
  release(u: number): void {
    const f = this.#freeze;
    if (!f) return;
    f.read.add(u);
    const saved = f.saved.get(u);
    if (saved) {
      f.saved.delete(u);
      f.savedBytes -= saved.length;
    }
  }

  /** Reads unit `u` as it was when the freeze started. */
  readFrozen(u: number): Promise<Uint8Array> {
    const f = this.#freeze;
    if (!f) throw new Error('not frozen');
    return this.#locks.run(u, async () => {
      const saved = f.saved.get(u);
      f.read.add(u);
      if (saved) {
        f.saved.delete(u);
        f.savedBytes -= saved.length;
        return saved;
      }
      const off = u * f.unit;
      const buf = new Uint8Array(Math.min(f.unit, this.size - off));
      await this.next.read(buf, off);
      return buf;
    });
  }

  /** The frozen disk as a read-only device (the source `rebound commit` backs up). */
  frozenView(): BlockDevice {
    return new FrozenView(this);
  }

  /** Runs a write-path call with every unit it touches saved first (when frozen). */
  async #guarded(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    const f = this.#freeze;
    if (!f) {
      this.#unguarded++;
      try {
        return await op();
      } finally {
        if (--this.#unguarded === 0) for (const r of this.#unguardedDone.splice(0)) r();
      }
    }
    if (length === 0) return op();
    const first = Math.floor(offset / f.unit);
    const last = Math.floor((offset + length - 1) / f.unit);
    const hold = async (u: number): Promise<void> => {
      if (u > last) return op();
      return this.#locks.run(u, async () => {
        if (this.#freeze === f && !f.read.has(u) && !f.saved.has(u)) {
          const off = u * f.unit;
          const buf = new Uint8Array(Math.min(f.unit, this.size - off));
          await this.next.read(buf, off);
          f.saved.set(u, buf);
          f.savedBytes += buf.length;
        }
        await hold(u + 1);
      });
    };
    return hold(first);
  }

  write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return this.#guarded(offset, src.length, () => this.next.write(src, offset, opts));
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#guarded(offset, length, () => this.next.trim(offset, length, opts));
  }

  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#guarded(offset, length, () => this.next.zero(offset, length, opts));
  }

  flush(opts?: IoOptions): Promise<void> {
    return this.next.flush(opts);
  }
}

/**
 * FrozenView: the disk as it was when the freeze started, read-only, through readFrozen. Each
 * unit is meant to be read once (a read hands its saved copy over and releases it: a later read of
 * the unit sees the current data), which is how the ingest reads. Closing the view leaves the
 * layer and the stack alone.
 */
class FrozenView extends ReadOnlyDevice {
  readonly name = 'frozen-view';
  protected override readonly readOnlyMessage = 'a frozen view is read-only';
  readonly size: number;
  readonly #layer: FreezeLayer;

  constructor(layer: FreezeLayer) {
    super();
    this.#layer = layer;
    this.size = layer.size;
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    for (let pos = 0; pos < dst.length; ) {
      const unit = this.#unit();
      const u = Math.floor((offset + pos) / unit);
      const data = await this.#layer.readFrozen(u);
      const from = offset + pos - u * unit;
      const n = Math.min(dst.length - pos, data.length - from);
      dst.set(data.subarray(from, from + n), pos);
      pos += n;
    }
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    return allData(offset, length);
  }

  async close(): Promise<void> {}

  #unit(): number {
    const unit = this.#layer.frozenUnit;
    if (unit === undefined) throw new BlockError('EIO', 'the disk is no longer frozen');
    return unit;
  }
}
