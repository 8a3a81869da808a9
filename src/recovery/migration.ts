/**
 * DiskMigration: the copier that brings one session disk home. It copies the disk's merged view
 * (restore point + overlay) to production storage while the VM runs, keeps the copy in step with
 * the VM's writes, performs the switch-over and the final comparison. It never decides a state on
 * its own: every state change is a durable transition of its disk (MigratingDisk.transition,
 * disk-state.ts), and a transition that cannot be saved changes nothing.
 *
 * Design notes:
 *  - Pass 1 copies the disk in `unit`-sized pieces (1 MiB), INFLIGHT at a time, in order. Zero
 *    ranges (from the overlay's extents) are not written to a fresh target and zeroed on a reused
 *    one. `cursor` is the end of the completed prefix.
 *  - Each copier's buffer is shared memory (a SharedArrayBuffer): a unit the VM has not written
 *    is a whole chunk of the restore point, which the chunk worker writes straight into it
 *    (repo-image.ts), bypassing the chunk cache the VM reads through.
 *  - Writes of the VM mark units dirty in the DirtyTracker below the switch point; the copier
 *    clears a unit before it reads it (see dirty-tracker.ts for why that misses nothing) and keeps
 *    copying dirty units. In step = pass 1 done and what is dirty fits SYNC_SLACK: the final copy
 *    under the switch's pause is then short.
 *  - The target's writeback starts every 64 MiB written (targets.ts EarlyWriteback), so the disk
 *    works while units are still decoded: the final flush of a 1 GiB copy to a file was 0.8 s of
 *    1.8 s without it.
 *  - Progress (cursor) is saved about every PERSIST_MS after a target flush, asynchronously, so a
 *    migration resumes after a crash from `cursor`, with every unit the overlay shadows below it
 *    marked dirty (the dirty set itself is not saved; the overlay knows every write of the VM). A
 *    failed progress save is logged and retried later: an older cursor only means more copying.
 *  - A target error (ENOSPC, a vanished NBD server) pauses the migration with the message; the
 *    overlay stays authoritative and nothing is lost.
 *  - Switch: `switching` is saved, the copier stops, then under SwitchableDevice.exclusive (no VM
 *    request in flight, new ones held) the last dirty units are copied, the target flushed, and
 *    `switched` saved — only then is the export re-pointed at the target. If that save fails, the
 *    export stays on the overlay, the copier resumes and the switch fails with the reason.
 *  - The final comparison reads overlay and target unit by unit; a difference in a unit the VM
 *    has not written since the switch is repaired from the overlay (and counted).
 */
import { DirtyTracker } from '../blockdev/layers/dirty-tracker.js';
import type { SwitchableDevice } from '../blockdev/layers/switchable.js';
import type { CowOverlay } from '../blockdev/layers/cow/cow-overlay.js';
import { errorText, ReboundError } from '../errors.js';
import { EarlyWriteback, openTarget, zeroRange, type WriteTarget } from '../repo/targets.js';
import type { PathGate } from '../util/path-policy.js';
import type { Logger } from '../util/log.js';
import { TokenBucket } from '../util/token-bucket.js';
import type { DiskState } from './disk-state.js';
import type { MigrationRecord, SessionDiskRecord } from './session-record.js';

export const MIGRATION_UNIT = 1024 * 1024;

/** A copier's unit buffer: shared memory, so chunk workers can fill it (see the design notes). */
function unitBuffer(bytes: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(bytes));
}
const INFLIGHT = 8;
const PERSIST_MS = 1000;
const SYNC_SLACK = 64 * 1024 * 1024;

export interface MigrationProgress {
  disk: string;
  target: string;
  state: DiskState;
  totalBytes: number;
  doneBytes: number;
  percent: number;
  dirtyBytes: number;
  copiedBytes: number;
  rate: number;
  etaSeconds: number | null;
  error: string | null;
}

/** What the copier needs of the disk it migrates (SessionDisk). */
export interface MigratingDisk {
  readonly name: string;
  readonly size: number;
  readonly state: DiskState;
  /** The live record; `migration` is present while a migration exists. */
  readonly record: SessionDiskRecord;
  /** A durable state change (saved before it takes effect; rejects and changes nothing if it cannot be saved). */
  transition(to: DiskState, change?: (d: SessionDiskRecord) => void): Promise<void>;
  /** Saves progress (cursor, bytes) durably; rejects if it cannot. */
  saveProgress(): Promise<void>;
}

export interface DiskMigrationOptions {
  disk: MigratingDisk;
  overlay: CowOverlay;
  tracker: DirtyTracker;
  log: Logger;
  unit?: number;
  /** Checks the target file as opened (util/path-policy.ts); each start or resume opens it anew. */
  targetGate?: PathGate;
}

export class DiskMigration {
  readonly #disk: MigratingDisk;
  readonly #overlay: CowOverlay;
  readonly #tracker: DirtyTracker;
  readonly #log: Logger;
  readonly #unit: number;
  readonly #bucket: TokenBucket;
  #target: WriteTarget | undefined;
  /** Starts the target's writeback while copying (targets.ts); one per opened target. */
  #writeback: EarlyWriteback | undefined;
  readonly #targetGate: PathGate | undefined;
  #run: Promise<void> | undefined;
  #stop: AbortController | undefined;
  #rateWindow: Array<[number, number]> = [];
  /** A switch-over is under way: the copier must not claim in-step meanwhile. */
  #switching = false;

  constructor(opts: DiskMigrationOptions) {
    this.#disk = opts.disk;
    this.#overlay = opts.overlay;
    this.#tracker = opts.tracker;
    this.#log = opts.log;
    this.#targetGate = opts.targetGate;
    this.#unit = opts.unit ?? MIGRATION_UNIT;
    this.#bucket = new TokenBucket(this.#record.rate ?? 0, 0.25);
  }

  get #record(): MigrationRecord {
    const m = this.#disk.record.migration;
    if (!m) throw new Error(`disk ${this.#disk.name} has no migration record`);
    return m;
  }

  /** The copier is running (pass 1 or keeping in step). */
  get running(): boolean {
    return this.#run !== undefined;
  }

  /** The target device (open while copying and after the switch). */
  get target(): WriteTarget | undefined {
    return this.#target;
  }

  progress(): MigrationProgress {
    const r = this.#record;
    const state = this.#disk.state;
    const size = this.#disk.size;
    const home = state === 'switched' || state === 'retired';
    const dirtyBytes = home ? 0 : this.#tracker.dirtyUnits * this.#unit;
    const done = home ? size : Math.max(0, Math.min(size, r.cursor) - Math.min(dirtyBytes, r.cursor));
    const now = Date.now();
    this.#rateWindow = this.#rateWindow.filter(([t]) => t > now - 5000);
    const rate = this.#rateWindow.reduce((a, [, n]) => a + n, 0) / 5;
    const left = size - done;
    return {
      disk: this.#disk.name,
      target: r.target,
      state,
      totalBytes: size,
      doneBytes: done,
      percent: Math.floor((done / Math.max(1, size)) * 1000) / 10,
      dirtyBytes,
      copiedBytes: r.copiedBytes,
      rate: Math.round(rate),
      etaSeconds: rate > 0 && left > 0 ? Math.ceil(left / rate) : left === 0 ? 0 : null,
      error: r.error,
    };
  }

  setRate(rate: number | null): void {
    this.#record.rate = rate;
    this.#bucket.setRate(rate ?? 0);
  }

  /**
   * Starts the background copy (the disk is `copying` or `in-step`). `resume`: continue from the
   * saved cursor, keeping the target's content; otherwise a new copy from the start.
   */
  start(resume: boolean): void {
    if (this.#run) return;
    this.#stop = new AbortController();
    const signal = this.#stop.signal;
    this.#run = this.#copy(resume, signal)
      .catch(async (err: unknown) => {
        if (signal.aborted) return;
        const why = errorText(err);
        this.#log.warn('migration paused', { disk: this.#disk.name, target: this.#record.target, err: why });
        await this.#disk.transition('paused', (d) => (d.migration!.error = why)).catch((saveErr: unknown) => {
          // The pause could not be saved either (full data directory): the copy has stopped all the
          // same; the report shows the copier idle and the error.
          this.#record.error = why;
          this.#log.error('cannot record the paused migration', { disk: this.#disk.name, err: errorText(saveErr) });
        });
      })
      .finally(() => {
        this.#run = undefined;
      });
  }

  /** Stops the copier (in-flight units finish); the target stays open. */
  async halt(): Promise<void> {
    this.#stop?.abort(new ReboundError('ERR_SESSION_STATE', 'migration stopped'));
    await this.#run;
  }

  /** Stops the copier and closes the target (cancel, discard, shutdown before a switch). */
  async close(): Promise<void> {
    await this.halt();
    await this.#writeback?.settled().catch(() => undefined);
    await this.#target?.close().catch(() => undefined);
    this.#target = undefined;
    this.#writeback = undefined;
    this.#tracker.stop();
  }

  async #copy(resume: boolean, signal: AbortSignal): Promise<void> {
    const r = this.#record;
    if (!resume) {
      r.cursor = 0;
      r.copiedBytes = 0;
    }
    this.#target ??= await openTarget(r.target, this.#disk.size, { startOver: !resume || r.cursor === 0, gate: this.#targetGate });
    const target = this.#target;
    const writeback = (this.#writeback ??= new EarlyWriteback(target));
    this.#tracker.start();
    if (resume) for (const [off, len] of this.#overlay.changedRanges()) if (off < r.cursor) this.#tracker.mark(off, Math.min(len, r.cursor - off));
    const size = this.#disk.size;
    const units = Math.ceil(size / this.#unit);
    let lastPersist = Date.now();
    const persist = async (force = false): Promise<void> => {
      if (!force && Date.now() - lastPersist < PERSIST_MS) return;
      lastPersist = Date.now();
      await writeback.settled();
      await target.flush();
      r.updatedAt = new Date().toISOString();
      await this.#disk.saveProgress().catch((err: unknown) => this.#log.warn('cannot save migration progress; will retry', { disk: this.#disk.name, err: errorText(err) }));
    };

    // Pass 1: in order, INFLIGHT at a time; the cursor is the end of the completed prefix.
    const done = new Set<number>();
    let next = Math.floor(r.cursor / this.#unit);
    let prefix = next;
    const worker = async (): Promise<void> => {
      const buf = unitBuffer(this.#unit); // one per worker, reused: no allocation per unit
      while (next < units) {
        signal.throwIfAborted();
        const u = next++;
        await this.#copyUnit(u, target, target.fresh, buf);
        done.add(u);
        while (done.delete(prefix)) prefix++;
        r.cursor = Math.min(size, prefix * this.#unit);
        await persist();
      }
    };
    await Promise.all(Array.from({ length: INFLIGHT }, worker));
    r.cursor = size;
    await persist(true);

    // Then keep up with the VM's writes until stopped (by a switch, a cancel or shutdown).
    for (;;) {
      signal.throwIfAborted();
      const dirty = this.#tracker.snapshot();
      const st = this.#disk.state;
      // After a refused switch the record may still say switching (if going back could not be saved).
      if ((st === 'copying' || (st === 'switching' && !this.#switching)) && dirty.length * this.#unit <= SYNC_SLACK) {
        try {
          await this.#disk.transition('in-step', (d) => (d.migration!.updatedAt = new Date().toISOString()));
          this.#log.info('migration in step', { disk: this.#disk.name, target: r.target });
        } catch (err) {
          this.#log.warn('cannot record that the migration is in step; will retry', { disk: this.#disk.name, err: errorText(err) });
        }
      }
      if (dirty.length === 0) {
        await this.#tracker.whenDirty(signal);
        continue;
      }
      await this.#copyUnits(dirty, target, signal);
      await writeback.settled();
    }
  }

  async #copyUnits(list: number[], target: WriteTarget, signal?: AbortSignal): Promise<void> {
    let i = 0;
    const worker = async (): Promise<void> => {
      const buf = unitBuffer(this.#unit);
      while (i < list.length) {
        signal?.throwIfAborted();
        const u = list[i++]!;
        if (this.#tracker.isDirty(u)) await this.#copyUnit(u, target, false, buf);
      }
    };
    await Promise.all(Array.from({ length: INFLIGHT }, worker));
  }

  /**
   * Copies one unit of the merged view through `buf` (the worker's; free again once the target
   * acknowledged the write); zero ranges are skipped on a fresh target.
   */
  async #copyUnit(u: number, target: WriteTarget, fresh: boolean, buf: Uint8Array): Promise<void> {
    const off = u * this.#unit;
    const len = Math.min(this.#unit, this.#disk.size - off);
    this.#tracker.clear(u);
    await this.#bucket.take(len);
    const ext = await this.#overlay.extents(off, len);
    const allZero = ext.length > 0 && ext.every((e) => e.zero) && ext.at(-1)!.offset + ext.at(-1)!.length >= off + len;
    if (allZero) {
      if (!fresh) await zeroRange(target, off, len);
    } else {
      const data = buf.subarray(0, len);
      await this.#overlay.read(data, off);
      await target.write(data, off);
      this.#writeback?.written(len);
    }
    this.#record.copiedBytes += len;
    this.#rateWindow.push([Date.now(), len]);
  }

  /**
   * Switches `sw` to the target (the disk must be in step). Returns the tracker now in front of
   * the target (it records the VM's writes after the switch, for the final comparison).
   */
  async switchOver(sw: SwitchableDevice): Promise<DirtyTracker> {
    const name = this.#disk.name;
    if (this.#disk.state !== 'in-step') throw new ReboundError('ERR_SESSION_STATE', `disk ${name} is ${this.#disk.state}, not in step with its target`);
    this.#switching = true;
    try {
      return await this.#switchOver(sw);
    } finally {
      this.#switching = false;
    }
  }

  async #switchOver(sw: SwitchableDevice): Promise<DirtyTracker> {
    const name = this.#disk.name;
    await this.#disk.transition('switching');
    // The copier must be idle first: a unit it read before the pause could otherwise land on the
    // target after the final copy of the same unit.
    await this.halt();
    const target = this.#target!;
    const after = new DirtyTracker(target, this.#unit);
    try {
      await sw.exclusive(async () => {
        await this.#copyUnits(this.#tracker.snapshot(), target);
        await target.flush();
        await this.#disk.transition('switched', (d) => {
          d.migration!.switchedAt = new Date().toISOString();
          d.migration!.updatedAt = d.migration!.switchedAt;
        });
        after.start();
        sw.switchTo(after);
      });
    } catch (err) {
      await this.#backFromFailedSwitch(err);
      throw err instanceof ReboundError ? err : new ReboundError('ERR_TARGET_IO', `switch of ${name} to ${this.#record.target} failed: ${errorText(err)}; the VM keeps running on its overlay`, { cause: err });
    }
    this.#tracker.stop();
    this.#log.info('switched to production storage', { disk: name, target: this.#record.target });
    return after;
  }

  /** The switch did not take effect: the export is still on the overlay. Resume keeping in step. */
  async #backFromFailedSwitch(err: unknown): Promise<void> {
    const why = errorText(err);
    this.#log.warn('switch refused; the VM stays on its overlay', { disk: this.#disk.name, err: why });
    // Back to in-step if that can be saved; if not, the record says `switching`, which a restart
    // also reads as "the switch never took effect".
    await this.#disk.transition('in-step').catch(() => undefined);
    this.start(true);
  }

  /**
   * The final comparison after a switch: overlay vs target, unit by unit; a difference in a unit
   * the VM has not written since the switch is repaired from the overlay (under the switch lock).
   */
  async verifyAfterSwitch(sw: SwitchableDevice, after: DirtyTracker): Promise<{ units: number; repaired: number }> {
    const target = this.#target!;
    const size = this.#disk.size;
    const units = Math.ceil(size / this.#unit);
    let repaired = 0;
    const a = new Uint8Array(this.#unit);
    const b = new Uint8Array(this.#unit);
    for (let u = 0; u < units; u++) {
      if (after.isDirty(u)) continue;
      const off = u * this.#unit;
      const len = Math.min(this.#unit, size - off);
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
      this.#log.warn('final comparison repaired units on the target', { disk: this.#disk.name, repaired });
    }
    after.stop();
    this.#record.verified = { units, repaired };
    return this.#record.verified;
  }
}

/** A new migration record for `target`. */
export function newMigrationRecord(target: string, rate: number | null): MigrationRecord {
  const now = new Date().toISOString();
  return { target, rate, cursor: 0, copiedBytes: 0, error: null, startedAt: now, updatedAt: now, switchedAt: null, verified: null };
}
