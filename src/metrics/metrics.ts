/**
 * The daemon's Prometheus metrics (`GET /metrics`): one prom-client Registry.
 *
 * Design notes:
 *  - Nothing here runs per request. Disk I/O is counted by io-meter.ts into plain typed arrays;
 *    everything else (sessions, migrations, QoS, chunk cache, repository, jobs, connections) is read
 *    from its owner when Prometheus scrapes, through ScrapeMetric families whose samples are built
 *    at scrape time. Series of a disk or session that is gone simply stop being produced.
 *  - Repository totals (chunks and stored bytes) come from the chunk store (ChunkStore.totals():
 *    one walk the first time, then kept by its writes and deletions), not from a walk per scrape.
 *  - Only disks opened at least once have series (restore points are published by the hundred,
 *    few are read), and a latency histogram appears for an operation once the disk served one.
 *    Formatting costs ~5 µs a line on the event loop: 200 busy disks scrape in ~50 ms.
 *  - Label sets are bounded: `export` by the catalog (removed with the entry), `session`/`disk` by
 *    the running sessions, `op`, `state`, `kind` and `front_end` by fixed lists.
 *  - Node's own metrics (event-loop delay `nodejs_eventloop_lag_*`, heap, GC, process CPU and RSS)
 *    come from prom-client's collectDefaultMetrics on the same registry.
 */
import { collectDefaultMetrics, Registry, type Metric } from 'prom-client';
import type { Catalog } from '../exports/catalog.js';
import type { StoreTotals } from '../repo/chunk-store.js';
import type { Repository } from '../repo/repository.js';
import type { JobRegistry } from '../api/jobs.js';
import type { SessionManager } from '../recovery/session-manager.js';
import { IO_OPS, IoMeters, LATENCY_BUCKETS } from './io-meter.js';

export type MetricType = 'counter' | 'gauge' | 'histogram';
export interface Sample {
  labels: Record<string, string | number>;
  value: number;
  /** For histograms: NAME_bucket, NAME_sum, NAME_count. */
  metricName?: string;
}

/** A metric family whose samples are computed when scraped. */
export class ScrapeMetric {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly aggregator = 'sum';
  readonly #collect: () => Sample[] | Promise<Sample[]>;

  constructor(name: string, help: string, type: MetricType, collect: () => Sample[] | Promise<Sample[]>) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.#collect = collect;
  }

  async get(): Promise<{ name: string; help: string; type: MetricType; values: Sample[]; aggregator: string }> {
    return { name: this.name, help: this.help, type: this.type, values: await this.#collect(), aggregator: this.aggregator };
  }

  reset(): void {}
}

export const FRONT_END_LABELS = ['nbd', 'nfs', 'iscsi'] as const;
export const JOB_STATES = ['running', 'succeeded', 'failed', 'cancelled'] as const;
export const MIGRATION_STATES = ['copying', 'in-step', 'paused', 'switching', 'switched'] as const;

export interface MetricsSources {
  catalog: Catalog;
  repo?: Repository;
  jobs?: JobRegistry;
  sessions?: SessionManager;
  /** Open connections per front end (those that run). */
  connections?: () => Partial<Record<(typeof FRONT_END_LABELS)[number], number>>;
  /** Node's default metrics (event loop, heap, process); default true. */
  defaultMetrics?: boolean;
}


export class Metrics {
  readonly registry = new Registry();
  readonly io = new IoMeters();
  #src: MetricsSources;
  readonly #unsubscribe: () => void;

  constructor(src: MetricsSources) {
    this.#src = src;
    const onRemoved = (e: { name: string }): void => this.io.remove(e.name);
    src.catalog.on('removed', onRemoved);
    this.#unsubscribe = () => src.catalog.off('removed', onRemoved);
    if (src.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    for (const m of this.#families()) this.registry.registerMetric(m as unknown as Metric);
  }

  /** Adds sources that exist only later (the daemon opens its repository after the catalog). */
  attach(more: Pick<MetricsSources, 'repo' | 'jobs' | 'sessions'>): void {
    this.#src = { ...this.#src, ...more };
  }

  /** The catalog hook that counts a disk's I/O (exports/catalog.ts `openerLayer`). */
  readonly openerLayer = (entry: { name: string }, device: Parameters<IoMeters['layer']>[1]) => this.io.layer(entry.name, device);

  /** Prometheus text exposition format 0.0.4. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    this.#unsubscribe();
    this.registry.clear();
  }

  #families(): ScrapeMetric[] {
    const io = (field: 'ops' | 'bytes' | 'errors', only?: ReadonlySet<string>) => (): Sample[] => {
      const out: Sample[] = [];
      for (const [name, d] of this.io.entries()) {
        IO_OPS.forEach((op, i) => {
          if (!only || only.has(op)) out.push({ labels: { export: name, op }, value: d[field][i]! });
        });
      }
      return out;
    };
    const latency = (): Sample[] => {
      const out: Sample[] = [];
      const n = 'rebound_disk_request_duration_seconds';
      for (const [name, d] of this.io.entries()) {
        IO_OPS.forEach((op, i) => {
          if (d.ops[i] === 0) return; // an operation never used has no histogram (scrape size: 18 lines each)
          const cum = d.cumulative(i);
          LATENCY_BUCKETS.forEach((le, b) => out.push({ metricName: `${n}_bucket`, labels: { export: name, op, le }, value: cum[b]! }));
          out.push({ metricName: `${n}_bucket`, labels: { export: name, op, le: '+Inf' }, value: cum.at(-1)! });
          out.push({ metricName: `${n}_sum`, labels: { export: name, op }, value: d.seconds[i]! });
          out.push({ metricName: `${n}_count`, labels: { export: name, op }, value: d.ops[i]! });
        });
      }
      return out;
    };
    const disks = () => (this.#src.sessions?.list() ?? []).flatMap((s) => s.disks.map((d) => ({ s, d, labels: { session: s.name, disk: d.name } })));
    const cache = () => this.#src.repo?.cache.stats();
    const one = (v: number | undefined): Sample[] => (v === undefined ? [] : [{ labels: {}, value: v }]);
    const repoTotals = async (): Promise<StoreTotals | undefined> => this.#src.repo?.store.totals();

    return [
      new ScrapeMetric('rebound_disk_operations_total', 'Requests served by a published disk, by operation (every front end).', 'counter', io('ops')),
      new ScrapeMetric('rebound_disk_bytes_total', 'Bytes of the requests served by a published disk (read, write; trim and zero count their range).', 'counter', io('bytes', new Set(['read', 'write', 'trim', 'zero']))),
      new ScrapeMetric('rebound_disk_errors_total', 'Requests of a published disk that failed, by operation.', 'counter', io('errors')),
      new ScrapeMetric('rebound_disk_request_duration_seconds', 'Time a published disk took to serve a request, by operation.', 'histogram', latency),

      new ScrapeMetric('rebound_session_overlay_bytes', "Data held in a session disk's overlay.", 'gauge', () =>
        disks().map(({ d, labels }) => ({ labels, value: d.overlay?.stats().allocatedBytes ?? 0 })),
      ),
      new ScrapeMetric('rebound_session_overlay_quota_bytes', "A session disk's overlay quota (absent: no quota).", 'gauge', () =>
        disks().flatMap(({ s, labels }) => (s.record.quota ? [{ labels, value: s.record.quota }] : [])),
      ),
      new ScrapeMetric('rebound_session_age_seconds', 'Time since a session was recovered.', 'gauge', () =>
        (this.#src.sessions?.list() ?? []).map((s) => ({ labels: { session: s.name }, value: Math.max(0, (Date.now() - Date.parse(s.record.createdAt)) / 1000) })),
      ),
      new ScrapeMetric('rebound_session_qos_throttled_seconds_total', "Time a session disk's requests waited for its QoS limits (summed over requests).", 'counter', () =>
        disks().map(({ d, labels }) => ({ labels, value: d.stack.qos.throttledSeconds })),
      ),
      new ScrapeMetric('rebound_migration_copied_bytes', "Bytes a session disk's migration has copied to its target.", 'gauge', () =>
        disks().flatMap(({ d, labels }) => {
          const m = d.migrationProgress();
          return m ? [{ labels, value: m.copiedBytes }] : [];
        }),
      ),
      new ScrapeMetric('rebound_migration_remaining_bytes', "Bytes a session disk's migration still has to copy (the first pass's rest plus dirty data).", 'gauge', () =>
        disks().flatMap(({ d, labels }) => {
          const m = d.migrationProgress();
          return m ? [{ labels, value: Math.max(0, m.totalBytes - m.doneBytes) + m.dirtyBytes }] : [];
        }),
      ),
      new ScrapeMetric('rebound_migration_state', "1 for a migrating session disk's state (copying, in-step, paused, switching, switched).", 'gauge', () =>
        disks().flatMap(({ d, labels }) => {
          const m = d.migrationProgress();
          return m ? MIGRATION_STATES.map((st) => ({ labels: { ...labels, state: st }, value: d.state === st ? 1 : 0 })) : [];
        }),
      ),

      new ScrapeMetric('rebound_chunk_cache_hits_total', 'Chunk reads answered from the shared chunk cache.', 'counter', () => one(cache()?.hits)),
      new ScrapeMetric('rebound_chunk_cache_misses_total', 'Chunk reads that had to load the chunk from the repository.', 'counter', () => one(cache()?.misses)),
      new ScrapeMetric('rebound_chunk_cache_bytes', 'Uncompressed bytes in the shared chunk cache.', 'gauge', () => one(cache()?.bytes)),
      new ScrapeMetric('rebound_chunk_cache_max_bytes', 'Size limit of the shared chunk cache.', 'gauge', () => one(cache()?.maxBytes)),

      new ScrapeMetric('rebound_repo_chunks', 'Chunks stored in the repository.', 'gauge', async () => one((await repoTotals())?.chunks)),
      new ScrapeMetric('rebound_repo_stored_bytes', 'Bytes the stored chunks take (compressed).', 'gauge', async () => one((await repoTotals())?.storedBytes)),
      new ScrapeMetric('rebound_repo_logical_bytes', 'Sum of the disk sizes of every restore point (what the stored bytes deduplicate).', 'gauge', async () => {
        const repo = this.#src.repo;
        if (!repo) return [];
        const points = await repo.points();
        return one(points.reduce((a, p) => a + p.disks.reduce((b, d) => b + d.size, 0), 0));
      }),
      new ScrapeMetric('rebound_repo_points', 'Restore points in the repository.', 'gauge', async () => (this.#src.repo ? one((await this.#src.repo.points()).length) : [])),

      new ScrapeMetric('rebound_jobs', 'Jobs the daemon knows (running and recently finished), by kind and state.', 'gauge', () => {
        const counts = new Map<string, number>();
        for (const j of this.#src.jobs?.list() ?? []) counts.set(`${j.kind}\0${j.state}`, (counts.get(`${j.kind}\0${j.state}`) ?? 0) + 1);
        return [...counts].map(([k, value]) => {
          const [kind, state] = k.split('\0');
          return { labels: { kind: kind!, state: state! }, value };
        });
      }),
      new ScrapeMetric('rebound_connections', 'Open client connections per front end.', 'gauge', () => {
        const c = this.#src.connections?.() ?? {};
        return FRONT_END_LABELS.flatMap((fe) => (c[fe] === undefined ? [] : [{ labels: { front_end: fe }, value: c[fe] }]));
      }),
      new ScrapeMetric('rebound_exports', 'Published disks, by kind (point, session, adhoc).', 'gauge', () => {
        const counts = { point: 0, session: 0, adhoc: 0 };
        for (const e of this.#src.catalog.entries()) counts[e.kind]++;
        return Object.entries(counts).map(([kind, value]) => ({ labels: { kind }, value }));
      }),
    ];
  }

}
