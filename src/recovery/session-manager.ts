/**
 * SessionManager: instant recovery. `recover` pins a restore point, opens one persistent overlay
 * per disk and publishes each disk in the catalog as `session/NAME/DISK` — in milliseconds,
 * whatever the disk size, since nothing is copied and the point's index loads on first I/O.
 * Sessions live in DATA/sessions/NAME/ (session-record.ts) and come back after a restart with the
 * same names, data, QoS limits and disk states; copies resume from their saved progress.
 *
 * The workflows live here and nowhere else (the API and CLI only call them):
 *   recover -> migrate -> (wait until in step) -> switch -> (final comparison, overlay retired)
 *   -> finish;  or discard at any point before the switch.
 * Each step is a durable state transition of a disk (disk-state.ts) saved before its effects.
 * `commit` stores the session's current disks as a new restore point.
 */
import fs from 'node:fs';
import path from 'node:path';
import { QosLimiter, type QosLimits } from '../blockdev/layers/qos.js';
import { errorText, ReboundError } from '../errors.js';
import { sessionEntryName, type Catalog, type FrontEnd } from '../exports/catalog.js';
import type { BackupOptions } from '../repo/ingest.js';
import type { PointManifest } from '../repo/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { Logger } from '../util/log.js';
import { checkTransition, type DiskState } from './disk-state.js';
import type { MigrationProgress } from './migration.js';
import { commitSession, type CommitRequest } from './session-commit.js';
import type { SessionDisk } from './session-disk.js';
import { checkSessionName, loadRecords, saveRecord, sessionsDir, SESSION_FORMAT, SESSION_VERSION, type PublishChoice, type SessionRecord } from './session-record.js';
import { describeSession, type ReportContext, type SessionReport } from './session-report.js';
import { RecoverySession } from './session.js';
import type { PathPolicy } from '../util/path-policy.js';

export interface RecoverRequest {
  vm: string;
  point?: string;
  name?: string;
  /** Overlay quota per disk, bytes. */
  quota?: number;
  qos?: QosLimits;
  /** Front ends to publish the disks on (default: all). */
  publish?: Partial<PublishChoice>;
  /** NBD TLS identities (PSK username, certificate DN or CN=NAME) admitted to the disks (tls/access.ts). */
  allow?: string[];
}

export interface MigrateRequest {
  /** Disks to migrate (default all). */
  disks?: string[];
  /** Target; with several disks it must contain `{disk}`. */
  to: string;
  /** Copy rate limit, bytes/s (0: unlimited). */
  rate?: number;
  /** Switch over once every disk is in step (migrateHome). */
  switch?: boolean;
}

export interface MigrateResult {
  session: string;
  disks: MigrationProgress[];
  /** Per disk, when switched: the final comparison. */
  switched: Array<{ disk: string; units: number; repaired: number }> | null;
}

export interface HomeOptions {
  signal?: AbortSignal;
  onProgress?: (p: MigrationProgress[]) => void;
}

export interface SessionManagerDeps {
  dataDir: string;
  repo: Repository;
  catalog: Catalog;
  log: Logger;
  /** Limits for all session disks together. */
  globalQos: QosLimits;
  report: Omit<ReportContext, 'now'>;
  /**
   * The daemon's path policy: migration targets are checked as opened, also when a migration
   * resumes after a restart (the policy may have changed since it was asked for). Absent
   * in-process: nothing is checked.
   */
  paths?: PathPolicy;
}

export class SessionManager {
  readonly #deps: SessionManagerDeps;
  readonly #sessions = new Map<string, RecoverySession>();
  readonly shared: QosLimiter;
  /** Sessions whose directory could not be opened (kept on disk, reported). */
  readonly broken: Array<{ dir: string; error: string }> = [];

  private constructor(deps: SessionManagerDeps) {
    this.#deps = deps;
    this.shared = new QosLimiter(deps.globalQos);
  }

  /** Loads every saved session, publishes it and resumes what its disks were doing. */
  static async open(deps: SessionManagerDeps): Promise<SessionManager> {
    const mgr = new SessionManager(deps);
    await fs.promises.mkdir(sessionsDir(deps.dataDir), { recursive: true });
    const { records, damaged } = await loadRecords(deps.dataDir);
    mgr.broken.push(...damaged);
    for (const { dir, record } of records) {
      try {
        if (record.disks.some((d) => d.state === 'discarded')) {
          // Discarded before a restart: finish the removal.
          await fs.promises.rm(dir, { recursive: true, force: true });
          deps.log.info('finished removing a discarded session', { session: record.name });
          continue;
        }
        const s = await mgr.#open(dir, record);
        await mgr.#resume(s);
      } catch (err) {
        mgr.broken.push({ dir, error: errorText(err) });
        deps.log.error('cannot reopen session', { session: record.name, err: errorText(err) });
      }
    }
    for (const b of mgr.broken) deps.log.error('session left on disk, not served', b);
    return mgr;
  }

  list(): RecoverySession[] {
    return [...this.#sessions.values()];
  }

  get(name: string): RecoverySession | undefined {
    return this.#sessions.get(name);
  }

  require(name: string): RecoverySession {
    const s = this.#sessions.get(name);
    if (!s) throw new ReboundError('ERR_SESSION_NOT_FOUND', `no recovery session named '${name}' (see rebound sessions)`);
    return s;
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  async recover(req: RecoverRequest): Promise<RecoverySession> {
    const m = await this.#deps.repo.point(req.vm, req.point ?? 'latest');
    const name = req.name ?? (await this.#freeName(m.vm));
    checkSessionName(name);
    const dir = path.join(sessionsDir(this.#deps.dataDir), name);
    if (this.#sessions.has(name) || (await exists(dir))) throw new ReboundError('ERR_SESSION_EXISTS', `a recovery session named '${name}' already exists`);
    if (req.quota !== undefined && !(req.quota > 0)) throw new ReboundError('ERR_INVALID_ARGUMENT', 'the quota must be a positive size');
    for (const a of req.allow ?? []) {
      if (typeof a !== 'string' || a.trim() === '' || a.length > 1024 || /[\x00-\x1f]/.test(a)) {
        throw new ReboundError('ERR_INVALID_ARGUMENT', `invalid --allow identity ${JSON.stringify(a)}: a PSK username, a certificate subject DN or CN=NAME`);
      }
    }
    const record: SessionRecord = {
      format: SESSION_FORMAT,
      version: SESSION_VERSION,
      name,
      vm: m.vm,
      pointId: m.id,
      createdAt: new Date().toISOString(),
      quota: req.quota ?? null,
      qos: cleanQos(req.qos ?? {}),
      publish: { nbd: req.publish?.nbd ?? true, nfs: req.publish?.nfs ?? true, fuse: req.publish?.fuse ?? true, iscsi: req.publish?.iscsi ?? true },
      disks: m.disks.map((d) => ({ name: d.name, size: d.size, state: 'running' as const, migration: null })),
      commits: [],
      ...(req.allow && req.allow.length > 0 ? { allow: [...new Set(req.allow)] } : {}),
    };
    await fs.promises.mkdir(dir, { recursive: true });
    try {
      await saveRecord(dir, record);
      const s = await this.#open(dir, record);
      this.#deps.log.info('session recovered', { session: name, point: `${m.vm}@${m.id}`, disks: record.disks.length });
      return s;
    } catch (err) {
      await fs.promises.rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  async #open(dir: string, record: SessionRecord): Promise<RecoverySession> {
    const m = await this.#deps.repo.point(record.vm, record.pointId);
    const s = await RecoverySession.open(dir, record, m, {
      repo: this.#deps.repo,
      shared: this.shared,
      log: this.#deps.log.child({ component: 'session' }),
      targetGate: this.#deps.paths?.gate('target', 'migration target'),
    });
    this.#publish(s);
    this.#sessions.set(s.name, s);
    return s;
  }

  #publish(s: RecoverySession): void {
    const fronts = (Object.entries(s.record.publish) as Array<[FrontEnd, boolean]>).filter(([, on]) => on).map(([f]) => f);
    for (const d of s.disks) {
      this.#deps.catalog.publish({
        name: sessionEntryName(s.name, d.name),
        kind: 'session',
        disk: d.name,
        size: d.size,
        capabilities: d.top.capabilities(),
        publish: fronts,
        description: `recovery session ${s.name}: ${s.record.vm} ${d.name} from ${s.record.pointId}`,
        source: `session:${s.name}/${d.name}`,
        session: s.info,
        open: async () => d.top,
        owned: false, // the session owns its stacks
        ...(s.record.allow ? { allow: s.record.allow } : {}),
        details: () => ({ state: d.state, overlay: d.overlay?.stats() ?? null, qos: s.limiter.limits, io: d.counters() }),
      });
    }
  }

  /** Revokes the session's catalog entries: every front end's handle is closed and drained. */
  async #unpublish(s: RecoverySession): Promise<void> {
    for (const d of s.disks) {
      const name = sessionEntryName(s.name, d.name);
      if (this.#deps.catalog.has(name)) await this.#deps.catalog.revoke(name);
    }
  }

  /** After a restart: copies resume; a switch that never took effect is undone; a switched disk's overlay is retired. */
  async #resume(s: RecoverySession): Promise<void> {
    for (const d of s.disks) {
      const st = d.state;
      if (st === 'switching') {
        // `switched` was never saved, so the export never moved: the overlay is the disk.
        this.#deps.log.warn('a switch-over was interrupted before it took effect; copying again', { session: s.name, disk: d.name });
        await d.transition('copying');
        d.resumeMigration();
      } else if (st === 'copying' || st === 'in-step') {
        d.resumeMigration();
      } else if (st === 'switched') {
        // The target has been authoritative since the switch (the VM wrote to it), so the final
        // comparison cannot be repeated safely.
        this.#deps.log.warn('switch completed before a restart; retiring the overlay without the final comparison', { session: s.name, disk: d.name });
        await d.retireOverlay();
      } else if (st === 'retired') {
        await d.retireOverlay(); // removes an overlay directory a crash left behind
      }
    }
    s.releasePointIfDone();
  }

  async #freeName(vm: string): Promise<string> {
    const taken = async (n: string): Promise<boolean> => this.#sessions.has(n) || (await exists(path.join(sessionsDir(this.#deps.dataDir), n)));
    const base = vm.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 56);
    if (!(await taken(base))) return base;
    for (let i = 2; ; i++) if (!(await taken(`${base}-${i}`))) return `${base}-${i}`;
  }

  /**
   * Drops the overlays (every write of the VM since recover) and unpins the restore point. The
   * decision is saved first (`discarded`); a restart after that finishes the removal.
   */
  async discard(name: string): Promise<void> {
    const s = this.require(name);
    for (const d of s.disks) checkTransition(d.name, d.state, 'discarded');
    await s.commit((r) => {
      for (const d of r.disks) d.state = 'discarded';
    });
    this.#sessions.delete(name);
    await this.#unpublish(s);
    await s.close();
    await fs.promises.rm(s.dir, { recursive: true, force: true });
    this.#deps.log.info('session discarded', { session: name });
  }

  /** Ends a session whose disks are all home: catalog entries revoked, session forgotten; the targets are production now. */
  async finish(name: string): Promise<void> {
    const s = this.require(name);
    const pending = s.disks.filter((d) => d.state !== 'retired');
    if (pending.length) {
      throw new ReboundError('ERR_SESSION_STATE', `session ${name} cannot finish: ${pending.map((d) => `${d.name} is ${d.state}`).join(', ')}; its targets are not complete`);
    }
    this.#sessions.delete(name);
    await this.#unpublish(s);
    await s.close();
    await fs.promises.rm(s.dir, { recursive: true, force: true });
    this.#deps.log.info('session finished', { session: name });
  }

  async setQos(name: string, limits: QosLimits): Promise<RecoverySession> {
    const s = this.require(name);
    const q = cleanQos(limits);
    await s.commit((r) => void (r.qos = q));
    s.limiter.set(q);
    return s;
  }

  setGlobalQos(limits: QosLimits): void {
    this.shared.set(cleanQos(limits));
  }

  // ---- migration ---------------------------------------------------------------------------

  /** Starts (or resumes, or re-rates) the migration of the session's disks; returns the disks. */
  async migrate(name: string, req: MigrateRequest): Promise<SessionDisk[]> {
    const s = this.require(name);
    const disks = req.disks?.length ? req.disks.map((n) => this.#disk(s, n)) : s.disks;
    if (disks.length > 1 && !req.to.includes('{disk}')) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `session ${name} has ${disks.length} disks: give --disk NAME, or a target containing {disk}`);
    }
    for (const d of disks) {
      const to = req.to.replaceAll('{disk}', d.name);
      const st: DiskState = d.state;
      if (st === 'copying' || st === 'in-step') {
        if (d.record.migration!.target !== to) throw new ReboundError('ERR_SESSION_STATE', `disk ${d.name} is already migrating to ${d.record.migration!.target}`);
        if (req.rate !== undefined) d.migration!.setRate(req.rate || null);
      } else if (st === 'running' || st === 'paused') {
        await d.startMigration(to, req.rate ? req.rate : null);
      } else {
        throw new ReboundError('ERR_SESSION_STATE', `disk ${d.name} of session ${name} is ${st}${d.record.migration ? ` (target ${d.record.migration.target})` : ''}`);
      }
    }
    return disks;
  }

  /**
   * The whole way home: migrate, wait until every disk is in step, and switch over when asked.
   * Fails if a disk pauses (target error, cancel) or on abort; progress is reported as it goes.
   */
  async migrateHome(name: string, req: MigrateRequest, opts: HomeOptions = {}): Promise<MigrateResult> {
    return this.home(name, await this.migrate(name, req), { ...opts, switch: req.switch });
  }

  /**
   * The rest of the way home for disks whose migration `migrate` started: wait until every one is
   * in step, then switch over when asked (the API starts the migration in the request and runs this
   * as the job).
   */
  async home(name: string, disks: SessionDisk[], opts: HomeOptions & { switch?: boolean } = {}): Promise<MigrateResult> {
    const progress = (): MigrationProgress[] => disks.map((d) => d.migrationProgress()).filter((p): p is MigrationProgress => p !== null);
    const tick = opts.onProgress ? setInterval(() => opts.onProgress!(progress()), 250) : undefined;
    try {
      await Promise.all(disks.map((d) => d.whenState(['in-step', 'switched', 'retired'], ['paused', 'running', 'discarded'], opts.signal)));
      const switched = opts.switch ? await this.switchOver(name) : null;
      opts.onProgress?.(progress());
      return { session: name, disks: progress(), switched };
    } finally {
      clearInterval(tick);
    }
  }

  /** Pauses migrations (the overlay stays authoritative; the target's partial copy is left). */
  async cancelMigration(name: string, diskNames?: string[]): Promise<void> {
    const s = this.require(name);
    for (const d of diskNames?.length ? diskNames.map((n) => this.#disk(s, n)) : s.disks) {
      if (d.state === 'copying' || d.state === 'in-step') await d.pauseMigration('cancelled by the operator');
    }
  }

  /**
   * Switches every migrating disk of the session to its target (all must be in step), runs the
   * final comparison and retires the overlays.
   */
  async switchOver(name: string): Promise<Array<{ disk: string; units: number; repaired: number }>> {
    const s = this.require(name);
    const migrating = s.disks.filter((d) => d.state !== 'running' && d.state !== 'retired');
    if (migrating.length === 0) throw new ReboundError('ERR_SESSION_STATE', `session ${name} has no migration to switch to (run rebound migrate first)`);
    // A disk already `switched` (its retirement could not be saved earlier) only needs retiring.
    const notReady = migrating.filter((d) => d.state !== 'in-step' && d.state !== 'switched');
    if (notReady.length) {
      throw new ReboundError(
        'ERR_SESSION_STATE',
        `session ${name} is not in step with its target yet: ${notReady.map((d) => `${d.name} is ${d.state}${d.record.migration?.error ? ` (${d.record.migration.error})` : ''}`).join(', ')}`,
      );
    }
    const results = [];
    for (const d of migrating) {
      if (d.state === 'switched') {
        await d.retireOverlay();
        results.push({ disk: d.name, ...(d.record.migration?.verified ?? { units: 0, repaired: 0 }) });
      } else {
        results.push({ disk: d.name, ...(await d.switchOver()) });
      }
      // The comparison's result, for the report; the switch itself is saved already.
      await s.commit().catch((err: unknown) => this.#deps.log.warn('cannot save the final comparison result', { session: s.name, disk: d.name, err: errorText(err) }));
      this.#deps.catalog.changed(sessionEntryName(s.name, d.name));
    }
    s.releasePointIfDone();
    return results;
  }

  #disk(s: RecoverySession, name: string): SessionDisk {
    const d = s.disk(name);
    if (!d) throw new ReboundError('ERR_DISK_NOT_FOUND', `session ${s.name} has no disk '${name}' (disks: ${s.disks.map((x) => x.name).join(', ')})`);
    return d;
  }

  /** Stores the session's disks as they are now as a new restore point (crash-consistent). */
  async commit(name: string, req: CommitRequest, opts: BackupOptions = {}): Promise<PointManifest> {
    const s = this.require(name);
    const m = await commitSession(this.#deps.repo, s, req, opts);
    await s.commit((r) => void r.commits.push({ pointId: m.id, at: m.createdAt }));
    this.#deps.log.info('session committed', { session: name, point: `${m.vm}@${m.id}` });
    return m;
  }

  // ---- reporting ---------------------------------------------------------------------------

  report(name?: string): SessionReport[] {
    const ctx = { ...this.#deps.report, now: Date.now() };
    return (name ? [this.require(name)] : this.list()).map((s) => describeSession(s, ctx));
  }

  /** Daemon shutdown: entries revoked, copiers stopped (states kept), devices closed. */
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

const exists = (p: string): Promise<boolean> => fs.promises.access(p).then(() => true, () => false);
