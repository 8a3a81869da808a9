/**
 * Metrics: the counting layer the catalog puts under every opener's gate, the exposition parsed by
 * a strict Prometheus text parser, series of an unpublished disk gone, and GET /metrics behind
 * the `read` permission (viewer token yes, no token 401).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { BlockError } from '../../../src/errors.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { Metrics } from '../../../src/metrics/metrics.js';
import { LATENCY_BUCKETS } from '../../../src/metrics/io-meter.js';
import { createApi } from '../../../src/api/server.js';
import { JobRegistry } from '../../../src/api/jobs.js';
import { silentLogger } from '../../../src/util/log.js';
import { parsePrometheusText, sampleValue } from '../../helpers/prom-text.js';
import { testAuth } from '../../helpers/api-auth.js';

function setUp() {
  const catalog = new Catalog();
  const metrics = new Metrics({ catalog, defaultMetrics: false, connections: () => ({ nbd: 3 }) });
  catalog.openerLayer = metrics.openerLayer;
  const device = new MemoryDevice(1 << 20);
  catalog.publish({ name: 'disk-a', kind: 'adhoc', disk: 'disk-a', size: device.size, capabilities: device.capabilities(), publish: ['nbd'], device });
  return { catalog, metrics, device };
}

describe('counting layer', () => {
  it('counts every opener of a disk into one set of series; failures count as errors', async () => {
    const { catalog, metrics, device } = setUp();
    const entry = catalog.resolve('disk-a')!;
    const a = await entry.open();
    const b = await entry.open();
    expect(a.name).toBe(device.name); // the gate keeps the device's name
    for (let i = 0; i < 10; i++) await a.write(new Uint8Array(4096), i * 4096);
    for (let i = 0; i < 5; i++) await b.read(new Uint8Array(512), 0);
    await a.flush();
    await b.trim(0, 8192);
    await a.zero(8192, 4096);
    await b.extents(0, 65536);
    // A failure below the gate: the device rejects; counted as an operation and an error.
    const orig = device.read.bind(device);
    device.read = () => Promise.reject(new BlockError('EIO', 'injected'));
    await expect(a.read(new Uint8Array(512), 0)).rejects.toThrow('injected');
    device.read = orig;

    const f = parsePrometheusText(await metrics.scrape());
    const v = (name: string, op: string) => sampleValue(f, name, { export: 'disk-a', op });
    expect(v('rebound_disk_operations_total', 'write')).toBe(10);
    expect(v('rebound_disk_bytes_total', 'write')).toBe(40960);
    expect(v('rebound_disk_operations_total', 'read')).toBe(6);
    expect(v('rebound_disk_bytes_total', 'read')).toBe(6 * 512);
    expect(v('rebound_disk_errors_total', 'read')).toBe(1);
    expect(v('rebound_disk_errors_total', 'write')).toBe(0);
    expect(v('rebound_disk_operations_total', 'flush')).toBe(1);
    expect(v('rebound_disk_operations_total', 'trim')).toBe(1);
    expect(v('rebound_disk_bytes_total', 'trim')).toBe(8192);
    expect(v('rebound_disk_operations_total', 'zero')).toBe(1);
    expect(v('rebound_disk_operations_total', 'extents')).toBe(1);
    expect(v('rebound_disk_request_duration_seconds_count', 'write')).toBe(10);
    const buckets = f.get('rebound_disk_request_duration_seconds')!.samples.filter((s) => s.name.endsWith('_bucket') && s.labels.op === 'write');
    expect(buckets).toHaveLength(LATENCY_BUCKETS.length + 1);
    expect(sampleValue(f, 'rebound_connections', { front_end: 'nbd' })).toBe(3);
    expect(sampleValue(f, 'rebound_exports', { kind: 'adhoc' })).toBe(1);
    for (const fam of f.values()) {
      if (fam.type === 'counter') expect(fam.name).toMatch(/_total$/);
      expect(fam.name).toMatch(/^rebound_/);
      expect(fam.help.length).toBeGreaterThan(10);
    }
    await a.close();
    await b.close();
    metrics.close();
  });

  it('an unpublished disk loses its series', async () => {
    const { catalog, metrics } = setUp();
    const g = await catalog.resolve('disk-a')!.open();
    await g.read(new Uint8Array(512), 0);
    expect(sampleValue(parsePrometheusText(await metrics.scrape()), 'rebound_disk_operations_total', { export: 'disk-a', op: 'read' })).toBe(1);
    await catalog.revoke('disk-a');
    const text = await metrics.scrape();
    parsePrometheusText(text);
    expect(text).not.toContain('disk-a');
    metrics.close();
  });

  it('the gate closing does not close the shared device (the catalog does, once)', async () => {
    const { catalog, device, metrics } = setUp();
    let closes = 0;
    const orig = device.close.bind(device);
    device.close = () => (closes++, orig());
    const g = await catalog.resolve('disk-a')!.open();
    await g.close();
    expect(closes).toBe(0);
    await catalog.unpublish('disk-a');
    expect(closes).toBe(1);
    metrics.close();
  });
});

describe('the strict text parser refuses what Prometheus would', () => {
  it.each([
    ['no TYPE', 'x 1\n'],
    ['bad value', '# TYPE x gauge\nx one\n'],
    ['duplicate series', '# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n'],
    ['bad escape', '# TYPE x gauge\nx{a="\\q"} 1\n'],
    ['not cumulative', '# TYPE h histogram\nh_bucket{le="1"} 5\nh_bucket{le="+Inf"} 3\nh_count 3\nh_sum 1\n'],
    ['+Inf differs from count', '# TYPE h histogram\nh_bucket{le="+Inf"} 3\nh_count 4\nh_sum 1\n'],
    ['no trailing newline', '# TYPE x gauge\nx 1'],
  ])('%s', (_what, text) => {
    expect(() => parsePrometheusText(text)).toThrow();
  });
});

describe('GET /metrics', () => {
  let app: FastifyInstance;
  let headers: (role?: 'viewer' | 'admin') => Record<string, string>;
  let metrics: Metrics;
  beforeAll(async () => {
    const t = await testAuth();
    headers = t.headers;
    const catalog = new Catalog();
    metrics = new Metrics({ catalog, jobs: new JobRegistry(silentLogger) });
    app = createApi({
      catalog,
      log: silentLogger,
      version: '0',
      startedAt: new Date(),
      endpoints: () => ({ nbd: [], nbdSocket: [], http: '127.0.0.1:10810' }),
      config: () => ({ http: '127.0.0.1:10810' }),
      auth: t.auth,
      metrics,
    });
    await app.ready();
  });
  afterAll(async () => {
    await app.close();
    metrics.close();
  });

  it('answers a viewer token with the text format (with node event-loop delay), refuses no token', async () => {
    const r = await app.inject({ method: 'GET', url: '/metrics', headers: { host: '127.0.0.1:10810', ...headers('viewer') } });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toContain('text/plain; version=0.0.4');
    const f = parsePrometheusText(r.body);
    expect(f.has('nodejs_eventloop_lag_p99_seconds')).toBe(true);
    expect(f.has('rebound_disk_operations_total')).toBe(true);
    const anon = await app.inject({ method: 'GET', url: '/metrics', headers: { host: '127.0.0.1:10810' } });
    expect(anon.statusCode).toBe(401);
  });
});
