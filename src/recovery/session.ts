/**
 * Session: one recovered VM. Per disk it owns the device stack the VM writes to
 *
 *   stats -> qos -> freeze -> switch -> dirty-tracker -> cow overlay -> lazy repo image
 *                                  \-> (after the switch) dirty-tracker -> migration target
 *
 * and the disk's migration. The repo image opens lazily (a restore point's index can be tens of
 * MiB), so a session is usable at once whatever the disk size. Session does not register exports
 * or persist itself; the SessionManager (sessions.ts) does, through the `save` callback.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LazyDevice } from '../blockdev/base/lazy.js';
import { repoImageCapabilities } from '../blockdev/base/repo-image.js';
import { CowOverlay } from '../blockdev/layers/cow/cow-overlay.js';
import { DirtyTracker } from '../blockdev/layers/dirty-tracker.js';
import { FreezeLayer } from '../blockdev/layers/freeze.js';
import { QosLayer, QosLimiter } from '../blockdev/layers/qos.js';
import { StatsLayer, type IoCounters } from '../blockdev/layers/stats.js';
import { SwitchableDevice } from '../blockdev/layers/switchable.js';
import type { BlockDevice } from '../blockdev/types.js';
import type { SessionDiskView, SessionView } from '../exports/views.js';
import type { PointManifest } from '../repo/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { Logger } from '../util/log.js';
import { DiskMigration, MIGRATION_UNIT, type MigrationProgress } from './migration.js';
import { saveRecord, type SessionDiskRecord, type SessionRecord } from './session-record.js';

export function sessionExportName(session: string, disk: string): string {
  return `session/${session}/${disk}`;
}

export class SessionDisk implements SessionDiskView {
  readonly name: string;
  readonly size: number;
  readonly record: SessionDiskRecord;
  readonly top: BlockDevice;
  readonly stats: StatsLayer;
  readonly qos: QosLayer;
  readonly freeze: FreezeLayer;
  readonly switch: SwitchableDevice;
  /** Present until the overlay is retired. */
  overlay: CowOverlay | undefined;
  tracker: DirtyTracker | undefined;
  migration: DiskMigration | undefined;

  constructor(record: SessionDiskRecord, lower: BlockDevice, qos: QosLimiter, shared: QosLimiter, parts: { overlay?: CowOverlay; tracker?: DirtyTracker }) {
    this.name = record.name;
    this.size = record.size;
    this.record = record;
    this.overlay = parts.overlay;
    this.tracker = parts.tracker;
    this.switch = new SwitchableDevice(lower);
    this.freeze = new FreezeLayer(this.switch);
    this.qos = new QosLayer(this.freeze, qos, shared);
    this.stats = new StatsLayer(this.qos);
    this.top = this.stats;
  }

  device(): BlockDevice {
    return this.top;
  }

  counters(): IoCounters {
    return this.stats.counters();
  }

  migrationProgress(): MigrationProgress | null {
    return this.migration?.progress() ?? null;
  }
}

export interface SessionDeps {
  repo: Repository;
  shared: QosLimiter;
  log: Logger;
}

export class Session implements SessionView {
  readonly dir: string;
  readonly record: SessionRecord;
  readonly disks: SessionDisk[] = [];
  readonly limiter: QosLimiter;
  readonly #deps: SessionDeps;
  #unpin: (() => void) | undefined;
  #saving: Promise<void> = Promise.resolve();

  private constructor(dir: string, record: SessionRecord, deps: SessionDeps) {
    this.dir = dir;
    this.record = record;
    this.#deps = deps;
    this.limiter = new QosLimiter(record.qos);
  }

  get name(): string {
    return this.record.name;
  }
  get vm(): string {
    return this.record.vm;
  }
  get pointId(): string {
    return this.record.pointId;
  }
  get createdAt(): Date {
    return new Date(this.record.createdAt);
  }
  get publish(): { nbd: boolean; nfs: boolean } {
    return this.record.publish;
  }

  /** Opens a session's stacks (new or after a restart). Pins the restore point while it has overlays. */
  static async open(dir: string, record: SessionRecord, m: PointManifest, deps: SessionDeps): Promise<Session> {
    const s = new Session(dir, record, deps);
    try {
      for (const d of record.disks) s.disks.push(await s.#openDisk(d, m));
      if (s.disks.some((d) => d.overlay)) s.#unpin = deps.repo.pin(m.vm, m.id);
      return s;
    } catch (err) {
      await s.close();
      throw err;
    }
  }

  async #openDisk(d: SessionDiskRecord, m: PointManifest): Promise<SessionDisk> {
    const log = this.#deps.log.child({ session: this.name, disk: d.name });
    const save = (): Promise<void> => this.save();
    if (d.overlayRetired && d.migration) {
      const mig = new DiskMigration({ disk: d.name, size: d.size, record: d.migration, save, log });
      const target = await mig.reopenSwitchedTarget();
      const disk = new SessionDisk(d, target, this.limiter, this.#deps.shared, {});
      disk.migration = mig;
      return disk;
    }
    const repo = this.#deps.repo;
    const base = new LazyDevice('repo-image', d.size, repoImageCapabilities(repo.chunkSize), () => repo.openImage(m, d.name));
    let overlay: CowOverlay;
    try {
      overlay = await CowOverlay.open(base, {
        dir: path.join(this.dir, 'overlays', d.name),
        baseId: `repo:${m.vm}@${m.id}/${d.name}`,
        maxBytes: this.record.quota ?? undefined,
      });
    } catch (err) {
      await base.close();
      throw err;
    }
    const tracker = new DirtyTracker(overlay, MIGRATION_UNIT);
    const disk = new SessionDisk(d, tracker, this.limiter, this.#deps.shared, { overlay, tracker });
    if (d.migration) disk.migration = new DiskMigration({ disk: d.name, size: d.size, overlay, tracker, record: d.migration, save, log });
    return disk;
  }

  disk(name: string): SessionDisk | undefined {
    return this.disks.find((d) => d.name === name);
  }

  /** Persists the record; calls are serialised so the newest state always lands last. */
  save(): Promise<void> {
    this.#saving = this.#saving.then(() => saveRecord(this.dir, this.record)).catch((err: unknown) => {
      this.#deps.log.error('cannot save session record', { session: this.name, err });
    });
    return this.#saving;
  }

  /**
   * After a switch and the final comparison: closes and deletes a disk's overlay; when no disk
   * has an overlay left, the restore point is unpinned.
   */
  async retireOverlay(disk: SessionDisk): Promise<void> {
    const overlay = disk.overlay;
    if (!overlay) return;
    disk.overlay = undefined;
    disk.tracker = undefined;
    await overlay.close();
    fs.rmSync(overlay.dir, { recursive: true, force: true });
    disk.record.overlayRetired = true;
    await this.save();
    if (this.disks.every((d) => !d.overlay)) {
      this.#unpin?.();
      this.#unpin = undefined;
    }
    this.#deps.log.info('overlay retired', { session: this.name, disk: disk.name });
  }

  /** Stops migrations and closes every device (not the exports: the manager removes those first). */
  async close(): Promise<void> {
    for (const d of this.disks) await d.migration?.stop().catch(() => undefined);
    for (const d of this.disks) {
      await d.top.close().catch(() => undefined);
      // After a switch the overlay is no longer below the switch point: close it separately.
      if (d.overlay && d.switch.next !== d.tracker) await d.overlay.close().catch(() => undefined);
    }
    this.#unpin?.();
    this.#unpin = undefined;
  }
}
