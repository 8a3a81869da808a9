/**
 * SessionDisk: one disk of a recovery session — the device stack the VM writes to, its state
 * (disk-state.ts) and, while it has one, its migration.
 *
 *   stats -> qos -> freeze -> switch -> dirty-tracker -> cow overlay -> lazy repo image
 *                               \-> (after the switch) dirty-tracker -> migration target
 *
 * The top of the stack never changes (the switch layer re-points below it), so the catalog entry
 * and every front end that opened it keep working across a switch-over. The repo image opens
 * lazily (a restore point's index can be tens of MiB): a session is usable at once.
 *
 * State changes go through `transition()`, which the session saves durably before they take
 * effect (RecoverySession.commit). The workflows that use them (migrate, switch, retire) live in
 * SessionManager; this class holds the parts and the one place that changes state.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LazyDevice } from '../blockdev/base/lazy.js';
import { repoImageCapabilities } from '../blockdev/base/repo-image.js';
import { CowOverlay } from '../blockdev/layers/cow/cow-overlay.js';
import { DirtyTracker } from '../blockdev/layers/dirty-tracker.js';
import { FreezeLayer } from '../blockdev/layers/freeze.js';
import { QosLayer, type QosLimiter } from '../blockdev/layers/qos.js';
import { StatsLayer, type IoCounters } from '../blockdev/layers/stats.js';
import { SwitchableDevice } from '../blockdev/layers/switchable.js';
import type { BlockDevice } from '../blockdev/types.js';
import { buildStack, findLayer } from '../blockdev/layer.js';
import { EventEmitter } from 'node:events';
import { ReboundError } from '../errors.js';
import type { PointManifest } from '../repo/manifest.js';
import type { Repository } from '../repo/repository.js';
import { openTarget, type WriteTarget } from '../repo/targets.js';
import type { PathGate } from '../util/path-policy.js';
import type { Logger } from '../util/log.js';
import { checkTransition, overlayAuthoritative, type DiskState } from './disk-state.js';
import { DiskMigration, MIGRATION_UNIT, newMigrationRecord, type MigrationProgress } from './migration.js';
import type { SessionDiskRecord, SessionRecord } from './session-record.js';

/** The layers of a session disk above the switch point, built one way for the daemon and tests. */
export interface SessionDiskStack {
  readonly top: BlockDevice;
  readonly stats: StatsLayer;
  readonly qos: QosLayer;
  readonly freeze: FreezeLayer;
  readonly switch: SwitchableDevice;
}

/** stats -> qos -> freeze -> switch -> `lower` (with blockdev's one stack builder). */
export async function buildSessionDiskStack(lower: BlockDevice, qos: QosLimiter, shared: QosLimiter): Promise<SessionDiskStack> {
  const top = await buildStack(lower, [(n) => new SwitchableDevice(n), (n) => new FreezeLayer(n), (n) => new QosLayer(n, qos, shared), (n) => new StatsLayer(n)]);
  return { top, stats: findLayer(top, StatsLayer)!, qos: findLayer(top, QosLayer)!, freeze: findLayer(top, FreezeLayer)!, switch: findLayer(top, SwitchableDevice)! };
}

/** What a disk needs of its session. */
export interface DiskHost {
  readonly name: string;
  readonly dir: string;
  readonly record: SessionRecord;
  readonly limiter: QosLimiter;
  readonly shared: QosLimiter;
  readonly repo: Repository;
  readonly log: Logger;
  /**
   * Checks every migration target file as opened, when the migration starts, resumes or the
   * switched disk reopens (util/path-policy.ts); absent in-process (nothing checked).
   */
  readonly targetGate?: PathGate | undefined;
  /** Saves the record durably with `change` applied, then applies it in memory; rejects (changing nothing) if it cannot. */
  commit(change?: (r: SessionRecord) => void): Promise<void>;
}

export class SessionDisk {
  readonly name: string;
  readonly size: number;
  readonly stack: SessionDiskStack;
  readonly #host: DiskHost;
  readonly #events = new EventEmitter<{ state: [DiskState] }>();
  /** Present while the overlay is authoritative or awaits retirement. */
  #overlay: CowOverlay | undefined;
  #tracker: DirtyTracker | undefined;
  #migration: DiskMigration | undefined;
  /** The target serving the disk after a switch (or after a restart of a switched disk). */
  #target: WriteTarget | undefined;

  private constructor(host: DiskHost, record: SessionDiskRecord, stack: SessionDiskStack, parts: { overlay?: CowOverlay; tracker?: DirtyTracker; target?: WriteTarget }) {
    this.#host = host;
    this.name = record.name;
    this.size = record.size;
    this.stack = stack;
    this.#overlay = parts.overlay;
    this.#tracker = parts.tracker;
    this.#target = parts.target;
    this.#events.setMaxListeners(0);
  }

  /**
   * Opens the disk's stack as its state says: over the overlay while the overlay is authoritative,
   * over the migration target once switched. A switched disk's leftover overlay is not opened.
   */
  static async open(host: DiskHost, record: SessionDiskRecord, m: PointManifest): Promise<SessionDisk> {
    if (!overlayAuthoritative(record.state)) {
      const target = await openTarget(record.migration!.target, record.size, { gate: host.targetGate });
      return new SessionDisk(host, record, await buildSessionDiskStack(target, host.limiter, host.shared), { target });
    }
    const diskEntry = m.disks.find((x) => x.name === record.name);
    if (!diskEntry) throw new ReboundError('ERR_DISK_NOT_FOUND', `restore point ${m.vm}@${m.id} has no disk '${record.name}'`);
    const base = new LazyDevice('repo-image', record.size, repoImageCapabilities(diskEntry), () => host.repo.openImage(m, record.name));
    const lower = await buildStack(base, [
      (n) => CowOverlay.open(n, { dir: overlayDir(host.dir, record.name), baseId: `repo:${m.vm}@${m.id}/${record.name}`, maxBytes: host.record.quota ?? undefined }),
      (n) => new DirtyTracker(n, MIGRATION_UNIT),
    ]);
    const tracker = lower as DirtyTracker;
    const overlay = tracker.next as CowOverlay;
    const disk = new SessionDisk(host, record, await buildSessionDiskStack(lower, host.limiter, host.shared), { overlay, tracker });
    if (record.migration) disk.#migration = disk.#newMigration();
    return disk;
  }

  /** The live record of this disk (part of the session's record). */
  get record(): SessionDiskRecord {
    const r = this.#host.record.disks.find((d) => d.name === this.name);
    if (!r) throw new Error(`session ${this.#host.name} lost disk ${this.name}`);
    return r;
  }

  get state(): DiskState {
    return this.record.state;
  }

  get overlay(): CowOverlay | undefined {
    return this.#overlay;
  }

  get migration(): DiskMigration | undefined {
    return this.#migration;
  }

  /** The device the VM's I/O enters (stable for the disk's life). */
  get top(): BlockDevice {
    return this.stack.top;
  }

  counters(): IoCounters {
    return this.stack.stats.counters();
  }

  migrationProgress(): MigrationProgress | null {
    return this.#migration?.progress() ?? null;
  }

  /**
   * The one way this disk's state changes: checked against disk-state.ts, saved durably with
   * `change`, and only then applied. Rejects, changing nothing, when the save fails.
   */
  async transition(to: DiskState, change?: (d: SessionDiskRecord) => void): Promise<void> {
    checkTransition(this.name, this.state, to);
    const from = this.state;
    await this.#host.commit((r) => {
      const d = r.disks.find((x) => x.name === this.name)!;
      checkTransition(this.name, d.state, to); // again, in the save queue: a concurrent change may have won
      d.state = to;
      change?.(d);
    });
    this.#host.log.info('disk state', { session: this.#host.name, disk: this.name, from, to });
    this.#events.emit('state', to);
  }

  /** Saves the record as it is (migration progress). */
  saveProgress(): Promise<void> {
    return this.#host.commit();
  }

  /** Resolves when the state is one of `wanted`; rejects if it becomes one of `failed` first (or on abort). */
  whenState(wanted: DiskState[], failed: DiskState[], signal?: AbortSignal): Promise<DiskState> {
    return new Promise((resolve, reject) => {
      const check = (s: DiskState): boolean => {
        if (wanted.includes(s)) resolve(s);
        else if (failed.includes(s)) reject(new ReboundError('ERR_SESSION_STATE', `disk ${this.name} of session ${this.#host.name} is ${s}${this.record.migration?.error ? `: ${this.record.migration.error}` : ''}`));
        else return false;
        return true;
      };
      if (check(this.state)) return;
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = (): void => {
        this.#events.off('state', on);
        reject(signal!.reason);
      };
      const on = (s: DiskState): void => {
        if (!check(s)) return;
        this.#events.off('state', on);
        signal?.removeEventListener('abort', onAbort);
      };
      this.#events.on('state', on);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** running/paused -> copying: starts a migration to `target` (the same target again resumes the last one). */
  async startMigration(target: string, rate: number | null): Promise<DiskMigration> {
    const resume = this.record.migration?.target === target;
    const fresh = newMigrationRecord(target, rate);
    await this.transition('copying', (d) => {
      d.migration = resume ? { ...d.migration!, rate: rate ?? d.migration!.rate, error: null } : fresh;
    });
    await this.#migration?.close(); // a paused migration's target (another one, or reopened below)
    this.#migration = this.#newMigration();
    this.#migration.start(resume);
    return this.#migration;
  }

  /** Resumes the copier after a restart (state copying or in-step). */
  resumeMigration(): void {
    this.#migration?.start(true);
  }

  /** copying/in-step -> paused: the copier stops, the target's partial copy is left. */
  async pauseMigration(why: string): Promise<void> {
    const mig = this.#migration;
    if (!mig) return;
    await mig.halt();
    try {
      await this.transition('paused', (d) => (d.migration!.error = why));
    } catch (err) {
      mig.start(true); // still copying, as the record says
      throw err;
    }
    await mig.close();
  }

  /**
   * in-step -> switching -> switched: the export is re-pointed at the target. Returns the final
   * comparison's result once the overlay is retired (-> retired).
   */
  async switchOver(): Promise<{ units: number; repaired: number }> {
    const mig = this.#migration;
    if (!mig || this.state !== 'in-step') throw new ReboundError('ERR_SESSION_STATE', `disk ${this.name} is ${this.state}, not in step with a migration target`);
    const after = await mig.switchOver(this.stack.switch);
    this.#target = mig.target;
    const verified = await mig.verifyAfterSwitch(this.stack.switch, after);
    await this.retireOverlay();
    return verified;
  }

  /**
   * switched -> retired: closes the overlay, saves `retired`, then removes the overlay's files
   * (asynchronously). Also finishes a removal a crash interrupted.
   */
  async retireOverlay(): Promise<void> {
    const overlay = this.#overlay;
    this.#overlay = undefined;
    this.#tracker = undefined;
    if (overlay) await overlay.close();
    if (this.state === 'switched') await this.transition('retired');
    if (this.state === 'retired') await fs.promises.rm(overlayDir(this.#host.dir, this.name), { recursive: true, force: true });
  }

  /** Stops the copier (keeping the state, so a restart resumes it) and closes every device. */
  async close(): Promise<void> {
    await this.#migration?.halt();
    await this.stack.top.close().catch(() => undefined);
    // After a switch the overlay is no longer below the switch point: close it separately.
    if (this.#overlay && this.stack.switch.next !== this.#tracker) await this.#overlay.close().catch(() => undefined);
    if (this.#migration?.target !== this.#target) await this.#migration?.close();
  }

  #newMigration(): DiskMigration {
    return new DiskMigration({
      disk: this,
      overlay: this.#overlay!,
      tracker: this.#tracker!,
      log: this.#host.log.child({ session: this.#host.name, disk: this.name }),
      targetGate: this.#host.targetGate,
    });
  }
}

export function overlayDir(sessionDir: string, disk: string): string {
  return path.join(sessionDir, 'overlays', disk);
}
