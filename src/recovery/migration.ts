/**
 * DiskMigration: copies one session disk's merged view (base + overlay) to production storage
 * while the VM runs, keeps the copy in step, switches the export over, checks the copy and
 * retires the overlay.
 *
 * Design notes:
 *  - Pass 1 copies the disk in `unit`-sized pieces (1 MiB), `inflight` at a time, in order. Holes
 *    and zero ranges (from the overlay's extents) are not written to a fresh target and zeroed
 *    (WRITE_ZEROES where offered) on a reused one. `cursor` is the end of the completed prefix.
 *  - Writes of the VM mark units dirty in the DirtyTracker below the switch point; the copier
 *    clears a unit before it reads it (see dirty-tracker.ts for why that misses nothing) and
 *    keeps copying dirty units. "In step" (synced) = pass 1 done and what is dirty fits
 *    SYNC_SLACK: the final copy under the switch's pause is then short.
 *  - Progress is persisted (session.json) every PERSIST_MS after a target flush, so a migration
 *    resumes after a crash: from `cursor`, with every unit the overlay shadows marked dirty (the
 *    dirty set itself is not persisted; the overlay knows everything the VM ever wrote).
 *  - A target error (ENOSPC, a vanished NBD server) pauses the migration with the message; the
 *    overlay stays authoritative and nothing is lost. `migrate` again resumes from the cursor.
 *  - Switch: under SwitchableDevice.exclusive (no VM request in flight, new ones held), copy the
 *    remaining dirty units, flush the target, persist state 'switched', re-point the export at
 *    the target (through a second tracker). Then a final comparison reads overlay and target unit
 *    by unit; a difference in a unit the VM has not written since the switch is repaired (and
 *    counted). Only then is the overlay retired by the session.
 */
import { BlockError, errorText } from '../errors.js';
import { DirtyTracker } from '../blockdev/layers/dirty-tracker.js';
import type { SwitchableDevice } from '../blockdev/layers/switchable.js';
import type { BlockDevice } from '../blockdev/types.js';
import type { CowOverlay } from '../blockdev/layers/cow/cow-overlay.js';
import { TokenBucket } from '../util/token-bucket.js';
import type { Logger } from '../util/log.js';
import { openTarget, zeroRange, type WriteTarget } from '../repo/targets.js';

export type MigrationState = 'copying' | 'synced' | 'paused' | 'switching' | 'switched' | 'cancelled';

/** What session.json keeps of a disk's migration. */
export interface MigrationRecord {
  target: string;
  /** Copy rate limit, bytes/s (null: unlimited). */
  rate: number | null;
  state: MigrationState;
  cursor: number;
  copiedBytes: number;
  error: string | null;
  startedAt: string;
  updatedAt: string;
  switchedAt: string | null;
  /** Result of the final comparison after the switch. */
  verified: { units: number; repaired: number } | null;
}

export interface MigrationProgress {
  disk: string;
  target: string;
  state: MigrationState;
  totalBytes: number;
  doneBytes: number;
  percent: number;
  dirtyBytes: number;
  copiedBytes: number;
  rate: number;
  etaSeconds: number | null;
  error: string | null;
}

interface Waiter {
  until: MigrationState[];
  resolve: () => void;
  reject: (e: Error) => void;
}

export const MIGRATION_UNIT = 1024 * 1024;
const INFLIGHT = 8;
const PERSIST_MS = 1000;
const SYNC_SLACK = 64 * 1024 * 1024;

export interface DiskMigrationOptions {
  disk: string;
  size: number;
  /** Absent once the overlay is retired (a switched disk after a restart). */
  overlay?: CowOverlay;
  tracker?: DirtyTracker;
  record: MigrationRecord;
  /** Persists the session record (the migration's record is part of it). */
  save: () => Promise<void>;
  log: Logger;
  unit?: number;
}

export class DiskMigration {
  readonly disk: string;
  readonly record: MigrationRecord;
  readonly size: number;
  readonly #overlayOrNone: CowOverlay | undefined;
  readonly #trackerOrNone: DirtyTracker | undefined;
  readonly #save: () => Promise<void>;
  readonly #log: Logger;
  readonly #unit: number;
  readonly #bucket: TokenBucket;
  #target: WriteTarget | undefined;
  #run: Promise<void> | undefined;
  #stop: AbortController | undefined;
  #waiters: Waiter[] = [];
  #rateWindow: Array<[number, number]> = [];

  constructor(opts: DiskMigrationOptions) {
    this.disk = opts.disk;
    this.record = opts.record;
    this.size = opts.size;
    this.#overlayOrNone = opts.overlay;
    this.#trackerOrNone = opts.tracker;
    this.#save = opts.save;
    this.#log = opts.log;
    this.#unit = opts.unit ?? MIGRATION_UNIT;
    this.#bucket = new TokenBucket(opts.record.rate ?? 0, 0.25);
  }

  get #overlay(): CowOverlay {
    if (!this.#overlayOrNone) throw new BlockError('EINVAL', `disk ${this.disk} has no overlay any more (switched)`);
    return this.#overlayOrNone;
  }

  get #tracker(): DirtyTracker {
    if (!this.#trackerOrNone) throw new BlockError('EINVAL', `disk ${this.disk} has no overlay any more (switched)`);
    return this.#trackerOrNone;
  }

  get running(): boolean {
    return this.#run !== undefined;
  }

  progress(): MigrationProgress {
    const r = this.record;
    const dirtyBytes = (this.#trackerOrNone?.dirtyUnits ?? 0) * this.#unit;
    const done = Math.max(0, Math.min(this.size, r.cursor) - (r.state === 'switched' ? 0 : Math.min(dirtyBytes, r.cursor)));
    const now = Date.now();
    this.#rateWindow = this.#rateWindow.filter(([t]) => t > now - 5000);
    const rate = this.#rateWindow.reduce((a, [, n]) => a + n, 0) / 5;
    const left = this.size - done;
    return {
      disk: this.disk,
      target: r.target,
      state: r.state,
      totalBytes: this.size,
      doneBytes: r.state === 'switched' ? this.size : done,
      percent: Math.floor(((r.state === 'switched' ? this.size : done) / Math.max(1, this.size)) * 1000) / 10,
      dirtyBytes,
      copiedBytes: r.copiedBytes,
      rate: Math.round(rate),
      etaSeconds: rate > 0 && left > 0 ? Math.ceil(left / rate) : left === 0 ? 0 : null,
      error: r.error,
    };
  }

  setRate(rate: number | null): void {
    this.record.rate = rate;
    this.#bucket.setRate(rate ?? 0);
  }

  /** Starts (or resumes) the background copy. `resume`: continue a persisted migration. */
  start(resume: boolean): void {
    if (this.#run) return;
    this.#stop = new AbortController();
    const signal = this.#stop.signal;
    this.record.state = 'copying';
    this.record.error = null;
    this.#run = this.#copyLoop(resume, signal)
      .catch((err: unknown) => {
        if (signal.aborted) return;
        this.record.state = 'paused';
        this.record.error = errorText(err);
        this.#log.warn('migration paused', { disk: this.disk, target: this.record.target, err: this.record.error });
      })
      .finally(() => {
        this.#run = undefined;
        this.#notify();
        void this.#save().catch(() => undefined);
      });
  }

  /** Stops the background copier, keeping the target open and the tracker tracking. */
  async #halt(): Promise<void> {
    this.#stop?.abort(new BlockError('ESHUTDOWN', 'migration stopped'));
    await this.#run;
  }

  /**
   * Stops the copy (target closed, progress saved). `state` is recorded if given ('cancelled',
   * 'paused'); without it the state is kept, so a daemon shutdown resumes the copy at the next start.
   */
  async stop(state?: MigrationState): Promise<void> {
    await this.#halt();
    if (state && this.record.state !== 'switched') this.record.state = state;
    if (this.record.state !== 'switched') {
      await this.#target?.close().catch(() => undefined);
      this.#target = undefined;
    }
    this.#trackerOrNone?.stop();
    this.#notify();
    await this.#save().catch(() => undefined);
  }

  /** Resolves when the state is one of `states`; rejects if the migration pauses or stops instead. */
  waitFor(states: MigrationState[]): Promise<void> {
    if (states.includes(this.record.state)) return Promise.resolve();
    if (!this.#run) return Promise.reject(this.#notRunning());
    return new Promise((resolve, reject) => this.#waiters.push({ until: states, resolve, reject }));
  }

  #notRunning(): Error {
    return new BlockError('EIO', `migration of ${this.disk} to ${this.record.target} is ${this.record.state}${this.record.error ? `: ${this.record.error}` : ''}`);
  }

  #notify(): void {
    const keep: Waiter[] = [];
    for (const w of this.#waiters) {
      if (w.until.includes(this.record.state)) w.resolve();
      else if (!this.#run && this.record.state !== 'switching') w.reject(this.#notRunning());
      else keep.push(w);
    }
    this.#waiters = keep;
  }

  async #copyLoop(resume: boolean, signal: AbortSignal): Promise<void> {
    const r = this.record;
    if (!resume) {
      r.cursor = 0;
      r.copiedBytes = 0;
    }
    this.#target = await openTarget(r.target, this.size, { startOver: !resume || r.cursor === 0 });
    const target = this.#target;
    this.#tracker.start();
    if (resume) for (const [off, len] of this.#overlay.changedRanges()) if (off < r.cursor) this.#tracker.mark(off, Math.min(len, r.cursor - off));
    const units = Math.ceil(this.size / this.#unit);
    let lastPersist = Date.now();
    const persist = async (force = false): Promise<void> => {
      if (!force && Date.now() - lastPersist < PERSIST_MS) return;
      lastPersist = Date.now();
      await target.flush();
      r.updatedAt = new Date().toISOString();
      await this.#save();
    };

    // Pass 1: in order, INFLIGHT at a time; the cursor is the end of the completed prefix.
    const done = new Set<number>();
    let next = Math.floor(r.cursor / this.#unit);
    let prefix = next;
    const worker = async (): Promise<void> => {
      while (next < units) {
        signal.throwIfAborted();
        const u = next++;
        await this.#copyUnit(u, target, target.fresh);
        done.add(u);
        while (done.delete(prefix)) prefix++;
        r.cursor = Math.min(this.size, prefix * this.#unit);
        await persist();
      }
    };
    await Promise.all(Array.from({ length: INFLIGHT }, worker));
    r.cursor = this.size;
    await persist(true);

    // Then keep up with the VM's writes until stopped or switched.
    for (;;) {
      signal.throwIfAborted();
      if (this.record.state === 'switching' || this.record.state === 'switched') return;
      const dirty = this.#tracker.snapshot();
      if (r.state === 'copying' && dirty.length * this.#unit <= SYNC_SLACK) {
        r.state = 'synced';
        await persist(true);
        this.#log.info('migration in step', { disk: this.disk, target: r.target });
        this.#notify();
      }
      if (dirty.length === 0) {
        await this.#tracker.whenDirty(signal);
        continue;
      }
      await this.#copyUnits(dirty, target, signal);
    }
  }

  async #copyUnits(list: number[], target: BlockDevice, signal?: AbortSignal): Promise<void> {
    let i = 0;
    const worker = async (): Promise<void> => {
      while (i < list.length) {
        signal?.throwIfAborted();
        const u = list[i++]!;
        if (this.#tracker.isDirty(u)) await this.#copyUnit(u, target, false);
      }
    };
    await Promise.all(Array.from({ length: INFLIGHT }, worker));
  }

  /** Copies one unit of the merged view; zero ranges are skipped on a fresh target. */
  async #copyUnit(u: number, target: BlockDevice, fresh: boolean): Promise<void> {
    const off = u * this.#unit;
    const len = Math.min(this.#unit, this.size - off);
    this.#tracker.clear(u);
    await this.#bucket.take(len);
    const ext = await this.#overlay.extents(off, len);
    const allZero = ext.length > 0 && ext.every((e) => e.zero) && ext.at(-1)!.offset + ext.at(-1)!.length >= off + len;
    if (allZero) {
      if (!fresh) await zeroRange(target, off, len);
    } else {
      const buf = new Uint8Array(len);
      await this.#overlay.read(buf, off);
      await target.write(buf, off);
    }
    this.record.copiedBytes += len;
    this.#rateWindow.push([Date.now(), len]);
  }

  /**
   * Switches `sw` to the target: under exclusive, copies what is still dirty, flushes, records
   * 'switched' and re-points the export. Returns the tracker now in front of the target (it
   * records the VM's writes after the switch for the final comparison).
   */
  async switchOver(sw: SwitchableDevice): Promise<DirtyTracker> {
    if (this.record.state !== 'synced') throw new BlockError('EINVAL', `disk ${this.disk} is not in step with its target (state ${this.record.state})`);
    const target = this.#target!;
    // The background copier must be idle first: a copy it read before the pause could otherwise
    // land on the target after the final copy of the same unit.
    this.record.state = 'switching';
    await this.#halt();
    const after = new DirtyTracker(target, this.#unit);
    after.start();
    await sw.exclusive(async () => {
      try {
        await this.#copyUnits(this.#tracker.snapshot(), target);
        await target.flush();
      } catch (err) {
        this.record.state = 'paused';
        this.record.error = errorText(err);
        this.#notify();
        throw err;
      }
      this.record.state = 'switched';
      this.record.switchedAt = new Date().toISOString();
      this.record.updatedAt = this.record.switchedAt;
      await this.#save();
      sw.switchTo(after);
    });
    this.#tracker.stop();
    this.#notify();
    this.#log.info('switched to production storage', { disk: this.disk, target: this.record.target });
    return after;
  }

  /**
   * The final comparison after a switch: overlay vs target, unit by unit; a difference in a unit
   * the VM has not written since the switch is repaired from the overlay (under the switch lock).
   */
  async verifyAfterSwitch(sw: SwitchableDevice, after: DirtyTracker): Promise<{ units: number; repaired: number }> {
    const target = this.#target!;
    const units = Math.ceil(this.size / this.#unit);
    let repaired = 0;
    const a = new Uint8Array(this.#unit);
    const b = new Uint8Array(this.#unit);
    for (let u = 0; u < units; u++) {
      if (after.isDirty(u)) continue;
      const off = u * this.#unit;
      const len = Math.min(this.#unit, this.size - off);
      await this.#overlay.read(a.subarray(0, len), off);
      await target.read(b.subarray(0, len), off);
      if (Buffer.compare(a.subarray(0, len), b.subarray(0, len)) === 0) continue;
      await sw.exclusive(async () => {
        if (after.isDirty(u)) return;
        await target.write(a.subarray(0, len), off);
        repaired++;
      });
    }
    if (repaired) {
      await target.flush();
      this.#log.warn('final comparison repaired units on the target', { disk: this.disk, repaired });
    }
    after.stop();
    this.record.verified = { units, repaired };
    await this.#save();
    return this.record.verified;
  }

  /** The target device (open while copying and after the switch). */
  get target(): WriteTarget | undefined {
    return this.#target;
  }

  /** Opens the target of a migration that was switched before a restart. */
  async reopenSwitchedTarget(): Promise<WriteTarget> {
    this.#target = await openTarget(this.record.target, this.size);
    return this.#target;
  }
}
