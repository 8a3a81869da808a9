/**
 * Alert conditions: what the operator must hear about without watching the dashboard.
 *
 * Design notes:
 *  - `check()` evaluates every condition from its sources (the sessions report, the jobs, the
 *    repository's file system); the daemon calls it on a timer (`alertCheckSeconds`), tests call
 *    it directly with an injected clock. Nothing here waits on wall time.
 *  - Conditions that last (a session too old or too big, a quota above 90 %, a paused or stalled
 *    migration, the repository's disk nearly full) are keyed: a key that appears sends one
 *    `firing`, a key that disappears sends one `resolved`; while it lasts, nothing (no storm).
 *  - Events (a backup or restore job failed, a verify that found bad chunks, a verification boot
 *    that did not boot) fire once per job
 *    and never resolve; jobs seen are remembered while the job registry keeps them.
 *  - A migration is stalled when its disk is copying and its progress (done + copied bytes) has
 *    not moved for `stallMs`.
 */
import os from 'node:os';
import type { JobInfo } from '../api/jobs.js';
import type { SessionReport } from '../recovery/session-report.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { errorText } from '../errors.js';
import type { AlertKind, AlertMessage } from './webhooks.js';

export interface DiskUsage {
  path: string;
  totalBytes: number;
  freeBytes: number;
}

export interface AlertSources {
  sessions?: () => SessionReport[];
  jobs?: () => JobInfo[];
  /** The repository's file system (statfs). */
  disk?: () => Promise<DiskUsage | undefined>;
}

export interface AlertThresholds {
  /** Session age, hours (sessionWarnAgeHours); 0: off. */
  warnAgeHours: number;
  /** Overlay bytes of a session (sessionWarnSize); 0: off. */
  warnBytes: number;
  /** Quota share, percent (default 90). */
  quotaPercent?: number;
  /** Free space of the repository's file system under which it is "nearly full", percent; 0: off. */
  diskFreePercent: number;
  /** A copying migration without progress for this long is stalled, ms; 0: off. */
  stallMs: number;
}

export interface AlertMonitorOptions {
  send: (msg: AlertMessage) => void;
  sources: AlertSources;
  thresholds: AlertThresholds;
  now?: () => number;
  host?: string;
  log?: Logger;
}

interface Condition {
  kind: AlertKind;
  severity: 'warning' | 'critical';
  summary: string;
  details: Record<string, unknown>;
}

const JOB_FAILED_KINDS = new Set(['backup', 'restore']);

export class AlertMonitor {
  readonly #o: AlertMonitorOptions;
  readonly #now: () => number;
  readonly #host: string;
  readonly #log: Logger;
  /** Firing conditions: key -> when it started and what was sent. */
  readonly #active = new Map<string, { startsAt: string; c: Condition }>();
  readonly #seenJobs = new Set<string>();
  /** Migration progress per session/disk: last value and when it last moved. */
  readonly #progress = new Map<string, { value: number; since: number }>();
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<void> | undefined;

  constructor(opts: AlertMonitorOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#host = opts.host ?? os.hostname();
    this.#log = opts.log ?? silentLogger;
  }

  /** Keys of the conditions firing now. */
  get active(): string[] {
    return [...this.#active.keys()];
  }

  /** Runs `check()` now and every `intervalMs` (unref'd timer); failures are logged. */
  start(intervalMs: number): this {
    const run = (): void => void this.check().catch((err) => this.#log.warn('alert check failed', { err: errorText(err) }));
    this.#timer = setInterval(run, intervalMs);
    this.#timer.unref();
    run();
    return this;
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** Evaluates every condition once; overlapping calls share one run. */
  check(): Promise<void> {
    this.#checking ??= this.#check().finally(() => (this.#checking = undefined));
    return this.#checking;
  }

  async #check(): Promise<void> {
    const now = this.#now();
    const current = new Map<string, Condition>();
    this.#sessions(now, current);
    await this.#disk(current);
    this.#jobs();
    const at = new Date(now).toISOString();
    for (const [key, c] of current) {
      if (this.#active.has(key)) continue;
      this.#active.set(key, { startsAt: at, c });
      this.#emit(key, c, 'firing', at);
    }
    for (const [key, a] of [...this.#active]) {
      if (current.has(key)) continue;
      this.#active.delete(key);
      this.#emit(key, a.c, 'resolved', a.startsAt, at);
    }
  }

  #emit(key: string, c: Condition, state: 'firing' | 'resolved', startsAt: string, endsAt?: string): void {
    this.#log.info(state === 'firing' ? 'alert' : 'alert resolved', { key, summary: c.summary });
    this.#o.send({ key, kind: c.kind, state, severity: c.severity, summary: c.summary, details: c.details, startsAt, ...(endsAt ? { endsAt } : {}), host: this.#host });
  }

  #sessions(now: number, out: Map<string, Condition>): void {
    const t = this.#o.thresholds;
    const quotaShare = (t.quotaPercent ?? 90) / 100;
    const seen = new Set<string>();
    for (const s of this.#o.sources.sessions?.() ?? []) {
      const base = { session: s.name, vm: s.vm, point: s.point };
      if (t.warnAgeHours > 0 && s.ageSeconds > t.warnAgeHours * 3600) {
        out.set(`session-age:${s.name}`, { kind: 'session-age', severity: 'warning', summary: `session ${s.name} (${s.vm}) has been running from backup for ${Math.floor(s.ageSeconds / 3600)} h (over ${t.warnAgeHours} h)`, details: { ...base, ageSeconds: s.ageSeconds, thresholdHours: t.warnAgeHours } });
      }
      if (t.warnBytes > 0 && s.overlayBytes > t.warnBytes) {
        out.set(`session-size:${s.name}`, { kind: 'session-size', severity: 'warning', summary: `session ${s.name} (${s.vm}): overlays hold ${s.overlayBytes} bytes (over ${t.warnBytes})`, details: { ...base, overlayBytes: s.overlayBytes, thresholdBytes: t.warnBytes } });
      }
      for (const d of s.disks) {
        const id = `${s.name}/${d.name}`;
        const disk = { ...base, disk: d.name };
        if (d.quota && d.overlayBytes > quotaShare * d.quota) {
          out.set(`quota:${id}`, { kind: 'quota', severity: 'critical', summary: `${id}: overlay at ${Math.round((d.overlayBytes / d.quota) * 100)} % of its quota`, details: { ...disk, overlayBytes: d.overlayBytes, quota: d.quota } });
        }
        const m = d.migration;
        if (d.state === 'paused') {
          out.set(`migration-paused:${id}`, { kind: 'migration-paused', severity: 'critical', summary: `${id}: migration paused: ${m?.error ?? 'stopped'}`, details: { ...disk, target: m?.target ?? null, error: m?.error ?? null } });
        }
        if (m && d.state === 'copying' && t.stallMs > 0) {
          seen.add(id);
          const value = m.doneBytes + m.copiedBytes;
          const p = this.#progress.get(id);
          if (!p || p.value !== value) this.#progress.set(id, { value, since: now });
          else if (now - p.since >= t.stallMs) {
            out.set(`migration-stalled:${id}`, { kind: 'migration-stalled', severity: 'warning', summary: `${id}: migration to ${m.target} has made no progress for ${Math.round((now - p.since) / 60_000)} min`, details: { ...disk, target: m.target, doneBytes: m.doneBytes, totalBytes: m.totalBytes, sinceMs: now - p.since } });
          }
        }
      }
    }
    for (const id of [...this.#progress.keys()]) if (!seen.has(id)) this.#progress.delete(id);
  }

  async #disk(out: Map<string, Condition>): Promise<void> {
    const pct = this.#o.thresholds.diskFreePercent;
    if (!(pct > 0) || !this.#o.sources.disk) return;
    const u = await this.#o.sources.disk();
    if (!u || u.totalBytes <= 0) return;
    const free = (u.freeBytes / u.totalBytes) * 100;
    if (free < pct) {
      out.set('repo-disk-full', { kind: 'repo-disk-full', severity: 'critical', summary: `the repository's file system (${u.path}) is nearly full: ${free.toFixed(1)} % free (under ${pct} %)`, details: { path: u.path, freeBytes: u.freeBytes, totalBytes: u.totalBytes, thresholdPercent: pct } });
    }
  }

  /** One-shot events: a backup or restore failed, a verify found bad chunks. */
  #jobs(): void {
    const jobs = this.#o.sources.jobs?.() ?? [];
    const listed = new Set<string>();
    for (const j of jobs) {
      listed.add(j.id);
      if (j.state === 'running' || this.#seenJobs.has(j.id)) continue;
      this.#seenJobs.add(j.id);
      const at = j.finishedAt ?? new Date(this.#now()).toISOString();
      const details = { job: j.id, kind: j.kind, params: j.params };
      if (JOB_FAILED_KINDS.has(j.kind) && j.state === 'failed') {
        this.#emit(`job-failed:${j.id}`, { kind: 'job-failed', severity: 'critical', summary: `${j.kind} job ${j.id} failed: ${j.error?.message ?? 'unknown error'}`, details: { ...details, error: j.error } }, 'firing', at);
      }
      if (j.kind === 'boot-verify' && (j.state === 'failed' || (j.state === 'succeeded' && (j.result as { ok?: boolean } | null)?.ok === false))) {
        const r = j.result as { vm?: string; point?: string; reasons?: string[]; serialTail?: string[] } | null;
        const why = r?.reasons?.join('; ') ?? j.error?.message ?? 'unknown error';
        this.#emit(`verify-boot-failed:${j.id}`, { kind: 'verify-boot-failed', severity: 'critical', summary: `restore point ${String(j.params.vm)}@${String(j.params.point)} did not boot: ${why}`, details: { ...details, reasons: r?.reasons ?? [], serialTail: r?.serialTail?.slice(-10) ?? [], error: j.error } }, 'firing', at);
      }
      if (j.kind === 'verify' && j.state === 'succeeded') {
        const r = j.result as { ok?: boolean; problems?: unknown[]; indexProblems?: unknown[] } | null;
        const bad = (r?.problems?.length ?? 0) + (r?.indexProblems?.length ?? 0);
        if (r && (r.ok === false || bad > 0)) {
          this.#emit(`verify-bad-chunks:${j.id}`, { kind: 'verify-bad-chunks', severity: 'critical', summary: `verify job ${j.id} found ${bad} problem(s) in the repository`, details: { ...details, problems: r.problems?.slice(0, 20) ?? [], indexProblems: r.indexProblems?.slice(0, 20) ?? [] } }, 'firing', at);
        }
      }
    }
    for (const id of [...this.#seenJobs]) if (!listed.has(id)) this.#seenJobs.delete(id);
  }
}
