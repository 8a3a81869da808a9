/**
 * SessionManager: instant recovery. `recover` pins a restore point, opens one persistent overlay
 * per disk and publishes a writable export per disk (`session/NAME/DISK`) — in milliseconds,
 * whatever the disk size, since nothing is copied and the point's index loads on first I/O.
 * Sessions live in DATA/sessions/NAME/ (session-record.ts) and come back after a restart with the
 * same names, data, QoS limits and migrations (which resume from their persisted progress).
 *
 * Lifecycle: recover -> [migrate -> in step -> switch -> (final comparison, overlay retired)
 * -> finish] or discard. `commit` stores the session's current disks as a new restore point.
 */
import fs from 'node:fs';
import path from 'node:path';
import { QosLimiter, type QosLimits } from '../blockdev/layers/qos.js';
import { errorText, ReboundError } from '../errors.js';
import type { ExportRegistry } from '../exports/registry.js';
import type { SessionSource } from '../exports/views.js';
import type { Repository } from '../repo/repository.js';
import type { Logger } from '../util/log.js';
import { DiskMigration } from './migration.js';
import { commitSession, type CommitRequest } from './session-commit.js';
import type { BackupOptions } from '../repo/ingest.js';
import type { PointManifest } from '../repo/manifest.js';
import { Session, sessionExportName, type SessionDisk } from './session.js';
import { checkSessionName, loadRecords, saveRecord, sessionsDir, SESSION_FORMAT, SESSION_VERSION, type SessionRecord } from './session-record.js';
import { describeSession, type SessionReport, type ReportContext } from './session-report.js';

export interface RecoverRequest {
  vm: string;
  point?: string;
  name?: string;
  /** Overlay quota per disk, bytes. */
  quota?: number;
  qos?: QosLimits;
  publish?: { nbd?: boolean; nfs?: boolean };
}

export interface MigrateRequest {
  /** Disks to migrate (default all). */
  disks?: string[];
  /** Target; with several disks it must contain `{disk}`. */
  to: string;
  /** Copy rate limit, bytes/s. */
  rate?: number;
}

export interface SessionManagerDeps {
  dataDir: string;
  repo: Repository;
  registry: ExportRegistry;
  log: Logger;
  /** Limits for all session exports together. */
  globalQos: QosLimits;
  report: Omit<ReportContext, 'now'>;
}

export class SessionManager implements SessionSource {
  readonly #deps: SessionManagerDeps;
  readonly #sessions = new Map<string, Session>();
  readonly #listeners = new Set<() => void>();
  readonly shared: QosLimiter;
  /** Sessions whose directory could not be opened (kept on disk, reported). */
  readonly broken: Array<{ dir: string; error: string }> = [];

  private constructor(deps: SessionManagerDeps) {
    this.#deps = deps;
    this.shared = new QosLimiter(deps.globalQos);
  }

  /** Loads every persisted session, republishes it and resumes its migrations. */
  static async open(deps: SessionManagerDeps): Promise<SessionManager> {
    const mgr = new SessionManager(deps);
    fs.mkdirSync(sessionsDir(deps.dataDir), { recursive: true });
    const { records, damaged } = loadRecords(deps.dataDir);
    mgr.broken.push(...damaged);
    for (const { dir, record } of records) {
      try {
        const s = await mgr.#open(dir, record);
        await mgr.#resume(s);
      } catch (err) {
        mgr.broken.push({ dir, error: errorText(err) });
        deps.log.error('cannot reopen session', { session: record.name, err });
      }
    }
    for (const b of mgr.broken) deps.log.error('session left on disk, not served', b);
    return mgr;
  }

  // ---- SessionSource (the file front ends' view) ------------------------------------------

  list(): Session[] {
    return [...this.#sessions.values()];
  }

  get(name: string): Session | undefined {
    return this.#sessions.get(name);
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #changed(): void {
    for (const l of this.#listeners) l();
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  require(name: string): Session {
    const s = this.#sessions.get(name);
    if (!s) throw new ReboundError('ERR_SESSION_NOT_FOUND', `no recovery session named '${name}' (see rebound sessions)`);
    return s;
  }

  async recover(req: RecoverRequest): Promise<Session> {
    const m = await this.#deps.repo.point(req.vm, req.point ?? 'latest');
    const name = req.name ?? this.#freeName(m.vm);
    checkSessionName(name);
    const dir = path.join(sessionsDir(this.#deps.dataDir), name);
    if (this.#sessions.has(name) || fs.existsSync(dir)) throw new ReboundError('ERR_SESSION_EXISTS', `a recovery session named '${name}' already exists`);
    if (req.quota !== undefined && !(req.quota > 0)) throw new ReboundError('ERR_INVALID_ARGUMENT', 'the quota must be a positive size');
    const record: SessionRecord = {
      format: SESSION_FORMAT,
      version: SESSION_VERSION,
      name,
      vm: m.vm,
      pointId: m.id,
      createdAt: new Date().toISOString(),
      quota: req.quota ?? null,
      qos: cleanQos(req.qos ?? {}),
      publish: { nbd: req.publish?.nbd ?? true, nfs: req.publish?.nfs ?? true },
      disks: m.disks.map((d) => ({ name: d.name, size: d.size, migration: null, overlayRetired: false })),
      commits: [],
    };
    fs.mkdirSync(dir, { recursive: true });
    try {
      saveRecord(dir, record);
      const s = await this.#open(dir, record);
      this.#deps.log.info('session recovered', { session: name, point: `${m.vm}@${m.id}`, disks: record.disks.length });
      return s;
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  async #open(dir: string, record: SessionRecord): Promise<Session> {
    const m = await this.#deps.repo.point(record.vm, record.pointId);
    const s = await Session.open(dir, record, m, { repo: this.#deps.repo, shared: this.shared, log: this.#deps.log.child({ component: 'session' }) });
    if (record.publish.nbd) {
      for (const d of s.disks) {
        this.#deps.registry.add({
          name: sessionExportName(s.name, d.name),
          device: d.top,
          description: `recovery session ${s.name}: ${s.vm} ${d.name} from ${s.pointId}`,
          source: `session:${s.name}/${d.name}`,
          details: () => ({ session: s.name, overlay: d.overlay?.stats() ?? null, qos: s.limiter.limits, io: d.counters() }),
        });
      }
    }
    this.#sessions.set(s.name, s);
    this.#changed();
    return s;
  }

  /** After a restart: migrations continue, an interrupted switch-over is completed. */
  async #resume(s: Session): Promise<void> {
    for (const d of s.disks) {
      const mig = d.migration;
      if (!mig) continue;
      const st = mig.record.state;
      if (st === 'switched' && d.overlay) {
        // Switched before the crash, overlay not yet retired: the target has been authoritative
        // since the switch (VM writes went there), so the comparison cannot be repeated safely.
        this.#deps.log.warn('switch completed before a restart; retiring the overlay without the final comparison', { session: s.name, disk: d.name });
        const target = await mig.reopenSwitchedTarget();
        await d.switch.exclusive(async () => void d.switch.switchTo(target));
        await s.retireOverlay(d);
      } else if (st === 'copying' || st === 'synced' || st === 'switching') {
        mig.start(true);
      }
    }
  }

  #freeName(vm: string): string {
    const taken = (n: string): boolean => this.#sessions.has(n) || fs.existsSync(path.join(sessionsDir(this.#deps.dataDir), n));
    const base = vm.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 56);
    if (!taken(base)) return base;
    for (let i = 2; ; i++) if (!taken(`${base}-${i}`)) return `${base}-${i}`;
  }

  async #unpublish(s: Session): Promise<void> {
    for (const d of s.disks) {
      const name = sessionExportName(s.name, d.name);
      if (this.#deps.registry.has(name)) await this.#deps.registry.remove(name);
    }
  }

  /** Drops the overlays (every write of the VM since recover) and unpins the restore point. */
  async discard(name: string): Promise<void> {
    const s = this.require(name);
    this.#sessions.delete(name);
    this.#changed();
    await this.#unpublish(s);
    await s.close();
    fs.rmSync(s.dir, { recursive: true, force: true });
    this.#deps.log.info('session discarded', { session: name });
  }

  setQos(name: string, limits: QosLimits): Session {
    const s = this.require(name);
    s.record.qos = cleanQos(limits);
    s.limiter.set(s.record.qos);
    void s.save();
    return s;
  }

  setGlobalQos(limits: QosLimits): void {
    this.shared.set(cleanQos(limits));
  }

  // ---- migration ---------------------------------------------------------------------------

  migrate(name: string, req: MigrateRequest): DiskMigration[] {
    const s = this.require(name);
    const disks = req.disks?.length ? req.disks.map((n) => this.#disk(s, n)) : s.disks;
    if (disks.length > 1 && !req.to.includes('{disk}')) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `session ${name} has ${disks.length} disks: give --disk NAME, or a target containing {disk}`);
    }
    const out: DiskMigration[] = [];
    for (const d of disks) {
      if (!d.overlay || d.migration?.record.state === 'switched') throw new ReboundError('ERR_SESSION_STATE', `disk ${d.name} of session ${name} is already switched to ${d.migration?.record.target}`);
      const to = req.to.replaceAll('{disk}', d.name);
      if (d.migration?.running) {
        if (d.migration.record.target !== to) throw new ReboundError('ERR_SESSION_STATE', `disk ${d.name} is already migrating to ${d.migration.record.target}`);
        if (req.rate !== undefined) d.migration.setRate(req.rate || null);
        out.push(d.migration);
        continue;
      }
      // The same target again resumes from the saved cursor; another target starts over.
      const resume = d.migration?.record.target === to;
      const now = new Date().toISOString();
      d.record.migration = resume
        ? { ...d.migration!.record, rate: req.rate ?? d.migration!.record.rate }
        : { target: to, rate: req.rate ?? null, state: 'copying', cursor: 0, copiedBytes: 0, error: null, startedAt: now, updatedAt: now, switchedAt: null, verified: null };
      d.migration = new DiskMigration({
        disk: d.name,
        size: d.size,
        overlay: d.overlay,
        tracker: d.tracker,
        record: d.record.migration,
        save: () => s.save(),
        log: this.#deps.log.child({ session: s.name, disk: d.name }),
      });
      d.migration.start(resume);
      out.push(d.migration);
    }
    void s.save();
    return out;
  }

  /** Cancels migrations (the overlay stays authoritative; the target's partial copy is left). */
  async cancelMigration(name: string, diskNames?: string[]): Promise<void> {
    const s = this.require(name);
    for (const d of diskNames?.length ? diskNames.map((n) => this.#disk(s, n)) : s.disks) {
      if (d.migration && d.migration.record.state !== 'switched') await d.migration.stop('cancelled');
    }
  }

  /**
   * Switches every migrating disk of the session to its target (all must be in step), runs the
   * final comparison and retires the overlays.
   */
  async switchOver(name: string): Promise<Array<{ disk: string; units: number; repaired: number }>> {
    const s = this.require(name);
    const migrating = s.disks.filter((d) => d.migration && d.migration.record.state !== 'cancelled' && d.overlay);
    if (migrating.length === 0) throw new ReboundError('ERR_SESSION_STATE', `session ${name} has no migration to switch to (run rebound migrate first)`);
    const notReady = migrating.filter((d) => d.migration!.record.state !== 'synced');
    if (notReady.length) {
      throw new ReboundError(
        'ERR_SESSION_STATE',
        `session ${name} is not in step with its target yet: ${notReady.map((d) => `${d.name} is ${d.migration!.record.state}${d.migration!.record.error ? ` (${d.migration!.record.error})` : ''}`).join(', ')}`,
      );
    }
    const results = [];
    for (const d of migrating) results.push({ disk: d.name, ...(await this.#switchDisk(s, d)) });
    this.#changed();
    return results;
  }

  async #switchDisk(s: Session, d: SessionDisk): Promise<{ units: number; repaired: number }> {
    const mig = d.migration!;
    const after = await mig.switchOver(d.switch);
    const verified = await mig.verifyAfterSwitch(d.switch, after);
    await s.retireOverlay(d);
    return verified;
  }

  /** Ends a switched session: exports removed, session forgotten; the targets are production now. */
  async finish(name: string): Promise<void> {
    const s = this.require(name);
    const pending = s.disks.filter((d) => !d.record.overlayRetired);
    if (pending.length) {
      throw new ReboundError(
        'ERR_SESSION_STATE',
        `session ${name} cannot finish: ${pending.map((d) => `${d.name} is ${d.migration ? d.migration.record.state : 'not migrated'}`).join(', ')}; its targets are not complete`,
      );
    }
    this.#sessions.delete(name);
    this.#changed();
    await this.#unpublish(s);
    await s.close();
    fs.rmSync(s.dir, { recursive: true, force: true });
    this.#deps.log.info('session finished', { session: name });
  }

  #disk(s: Session, name: string): SessionDisk {
    const d = s.disk(name);
    if (!d) throw new ReboundError('ERR_DISK_NOT_FOUND', `session ${s.name} has no disk '${name}' (disks: ${s.disks.map((x) => x.name).join(', ')})`);
    return d;
  }

  /** Stores the session's disks as they are now as a new restore point (crash-consistent). */
  async commit(name: string, req: CommitRequest, opts: BackupOptions = {}): Promise<PointManifest> {
    const s = this.require(name);
    const m = await commitSession(this.#deps.repo, s, req, opts);
    this.#deps.log.info('session committed', { session: name, point: `${m.vm}@${m.id}` });
    return m;
  }

  // ---- reporting ---------------------------------------------------------------------------

  report(name?: string): SessionReport[] {
    const ctx = { ...this.#deps.report, now: Date.now() };
    return (name ? [this.require(name)] : this.list()).map((s) => describeSession(s, ctx));
  }

  async close(): Promise<void> {
    for (const s of this.list()) {
      await this.#unpublish(s).catch(() => undefined);
      await s.close();
    }
    this.#sessions.clear();
  }
}

function cleanQos(q: QosLimits): QosLimits {
  for (const [k, v] of Object.entries(q)) {
    if (v !== undefined && v !== null && !(Number.isSafeInteger(v) && v >= 0)) throw new ReboundError('ERR_INVALID_ARGUMENT', `QoS ${k} must be a non-negative integer`);
  }
  return { ...(q.iops ? { iops: q.iops } : {}), ...(q.bps ? { bps: q.bps } : {}) };
}
