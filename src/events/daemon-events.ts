/**
 * DaemonEvents: feeds the EventHub from the daemon's own state, without the emitters changing.
 *
 *  - Sessions and jobs: while someone subscribes, a 1 s sampler reads the sessions report and the
 *    job list. Each session gets a `session` sample (disk states, overlay bytes, per-disk IOPS and
 *    bytes/s from the I/O counters' deltas over the last tick, migration progress); a new session is
 *    `session.created`, a gone one `session.removed`, a changed summary or disk state
 *    `session.state`; with the metrics' meters, the mean read and write latency of the tick's
 *    requests too. A job whose state or progress changed since the last tick is a `job` event
 *    (its state changes are kept for replay). No subscriber: no timer, and the first tick after a
 *    pause has no rates (a delta needs two samples).
 *  - The catalog is an EventEmitter: its added/changed/removed become `catalog` events directly.
 *
 * Polling the report once a second instead of hooking every state change keeps recovery/ and
 * api/jobs.ts untouched; one tick costs one report (tens of sessions at most) and one JSON
 * comparison per running job.
 */
import { sessionEntryName, type Catalog, type CatalogEntry } from '../exports/catalog.js';
import { IO_OPS, type IoMeters } from '../metrics/io-meter.js';
import type { JobInfo } from '../api/jobs.js';
import type { SessionReport } from '../recovery/session-report.js';
import { EventHub } from './event-hub.js';

export interface EventSources {
  catalog: Catalog;
  /** The sessions report (SessionManager.report); absent without a repository. */
  sessions?: () => SessionReport[];
  jobs?: () => JobInfo[];
  /** The metrics' per-disk meters (request latency); without them samples carry no latency. */
  io?: Pick<IoMeters, 'entries'>;
  /** Sampling period, ms (default 1000). */
  periodMs?: number;
}

interface DiskSample {
  at: number;
  ops: number;
  readOps: number;
  writeOps: number;
  readBytes: number;
  writeBytes: number;
  /** Metered requests and their summed latency, seconds (metrics/io-meter.ts). */
  metReads: number;
  metReadSeconds: number;
  metWrites: number;
  metWriteSeconds: number;
}

const READ = IO_OPS.indexOf('read');
const WRITE = IO_OPS.indexOf('write');

export class DaemonEvents {
  readonly hub: EventHub;
  readonly #src: EventSources;
  readonly #period: number;
  #timer: NodeJS.Timeout | undefined;
  #known = new Map<string, { vm: string; states: string }>();
  #disks = new Map<string, DiskSample>();
  #jobs = new Map<string, string>();
  #primed = false;
  readonly #unlisten: Array<() => void> = [];

  constructor(src: EventSources) {
    this.#src = src;
    this.#period = src.periodMs ?? 1000;
    this.hub = new EventHub({ onActive: (on) => (on ? this.#start() : this.#stop()) });
    const entry = (change: string) => (e: CatalogEntry) => {
      const vm = e.point?.vm ?? e.session?.vm;
      this.hub.publish('catalog', { change, name: e.name, kind: e.kind, ...(vm ? { vm } : {}) }, { vm, keep: true });
    };
    for (const change of ['added', 'changed', 'removed'] as const) {
      const h = entry(change);
      src.catalog.on(change, h);
      this.#unlisten.push(() => src.catalog.off(change, h));
    }
  }

  /** Samples now (the timer calls this each period; tests call it directly). */
  tick(): void {
    const now = Date.now();
    const first = !this.#primed;
    this.#primed = true;
    this.#tickSessions(now, first);
    this.#tickJobs(first);
  }

  close(): void {
    this.#stop();
    for (const u of this.#unlisten.splice(0)) u();
  }

  #tickSessions(now: number, first: boolean): void {
    const reports = this.#src.sessions?.() ?? [];
    const meters = new Map(this.#src.io && reports.length > 0 ? this.#src.io.entries() : []);
    const seen = new Set<string>();
    for (const r of reports) {
      seen.add(r.name);
      const states = `${r.state}|${r.disks.map((d) => d.state).join(',')}`;
      const known = this.#known.get(r.name);
      if (!known && !first) this.hub.publish('session.created', { session: r.name, point: r.point }, { vm: r.vm, keep: true });
      else if (known && known.states !== states) {
        this.hub.publish('session.state', { session: r.name, state: r.state, disks: r.disks.map((d) => ({ name: d.name, state: d.state })) }, { vm: r.vm, keep: true });
      }
      this.#known.set(r.name, { vm: r.vm, states });
      const disks = r.disks.map((d) => {
        const key = `${r.name}/${d.name}`;
        const c = d.io;
        const m = meters.get(sessionEntryName(r.name, d.name));
        const cur: DiskSample = {
          at: now,
          ops: c.reads + c.writes + c.trims + c.zeroes + c.flushes,
          readOps: c.reads,
          writeOps: c.writes,
          readBytes: c.readBytes,
          writeBytes: c.writeBytes,
          metReads: m?.ops[READ] ?? 0,
          metReadSeconds: m?.seconds[READ] ?? 0,
          metWrites: m?.ops[WRITE] ?? 0,
          metWriteSeconds: m?.seconds[WRITE] ?? 0,
        };
        const prev = this.#disks.get(key);
        this.#disks.set(key, cur);
        const dt = prev ? (cur.at - prev.at) / 1000 : 0;
        const rate = (k: keyof DiskSample): number | null => (prev && dt > 0 ? Math.max(0, Math.round((cur[k] - prev[k]) / dt)) : null);
        // Mean latency of the requests of the last tick, ms (null: none served, or no meters).
        const latency = (n: 'metReads' | 'metWrites', sec: 'metReadSeconds' | 'metWriteSeconds'): number | null =>
          prev && cur[n] > prev[n] ? +(((cur[sec] - prev[sec]) / (cur[n] - prev[n])) * 1000).toFixed(3) : null;
        return {
          name: d.name,
          size: d.size,
          state: d.state,
          overlayBytes: d.overlayBytes,
          quota: d.quota,
          iops: rate('ops'),
          readIops: rate('readOps'),
          writeIops: rate('writeOps'),
          readBps: rate('readBytes'),
          writeBps: rate('writeBytes'),
          readLatencyMs: latency('metReads', 'metReadSeconds'),
          writeLatencyMs: latency('metWrites', 'metWriteSeconds'),
          io: d.io,
          migration: d.migration,
        };
      });
      this.hub.publish('session', { session: r.name, state: r.state, ageSeconds: r.ageSeconds, overlayBytes: r.overlayBytes, qos: r.qos, warnings: r.warnings, disks }, { vm: r.vm });
    }
    for (const [name, k] of this.#known) {
      if (seen.has(name)) continue;
      this.#known.delete(name);
      for (const key of this.#disks.keys()) if (key.startsWith(`${name}/`)) this.#disks.delete(key);
      this.hub.publish('session.removed', { session: name }, { vm: k.vm, keep: true });
    }
  }

  #tickJobs(first: boolean): void {
    const jobs = this.#src.jobs?.() ?? [];
    const seen = new Set<string>();
    for (const j of jobs) {
      seen.add(j.id);
      const sig = JSON.stringify([j.state, j.progress]);
      const before = this.#jobs.get(j.id);
      this.#jobs.set(j.id, sig);
      if (before === sig || (first && j.state !== 'running')) continue;
      const stateChanged = before === undefined || JSON.parse(before)[0] !== j.state;
      const vm = typeof j.params.vm === 'string' ? j.params.vm : undefined;
      this.hub.publish('job', { job: j }, { vm, keep: stateChanged });
    }
    for (const id of this.#jobs.keys()) if (!seen.has(id)) this.#jobs.delete(id);
  }

  #start(): void {
    if (this.#timer) return;
    this.tick();
    this.#timer = setInterval(() => this.tick(), this.#period);
    this.#timer.unref();
  }

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#primed = false;
    this.#known.clear();
    this.#disks.clear();
    this.#jobs.clear();
  }
}
