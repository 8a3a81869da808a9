/**
 * Session metrics of a real daemon: the demo VM recovered with a quota and an IOPS limit; fio
 * writes to the session disk over NBD; /metrics shows the disk's I/O under its export name, the
 * overlay bytes and quota, QoS throttled time, then a migration to a file in step (copied bytes,
 * nothing remaining, state in-step) and the migrate job; after discard the session's series are gone.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';

const missing = missingPeers('fio');
let d: DaemonProcess;
let sock: string;
let dir: string;
const QUOTA = 48 * 1024 * 1024;

beforeAll(async () => {
  if (missing.length) return;
  dir = tempDir();
  sock = path.join(dir, 'nbd.sock');
  d = await startDaemonProcess(['--demo', '--data', path.join(dir, 'data'), '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', '--nfs', 'none', '--portmap', 'off', '--fuse', 'off']);
});

afterAll(async () => {
  if (missing.length) return;
  await d?.stop();
});

const api = async (method: string, url: string, body?: unknown) => {
  const r = await fetch(`${d.url}${url}`, { method, headers: { ...d.auth, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${url}: ${r.status} ${text}`);
  return text.startsWith('{') ? JSON.parse(text) : text;
};
const scrape = async () => parsePrometheusText(await api('GET', '/metrics'));

describe.skipIf(missing.length > 0)('session metrics', () => {
  it('I/O, overlay, quota, QoS throttling, migration in step, jobs; series gone after discard', async () => {
    await api('POST', '/v1/sessions', { vm: 'demo', name: 'mx', quota: QUOTA, qos: { iops: 100 }, publish: { nbd: true } });
    const exp = 'session/mx/disk0';
    const fio = await runOk('fio', ['--name=w', '--ioengine=nbd', `--uri=nbd+unix:///${exp}?socket=${sock}`, '--rw=randwrite', '--bs=64k', '--size=32M', '--io_size=8M', '--iodepth=4', '--output-format=json']);
    const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf('{'))).jobs[0];
    expect(job.error).toBe(0);
    // A read of what was not written comes from the repository, through the chunk cache.
    await runOk('fio', ['--name=r', '--ioengine=nbd', `--uri=nbd+unix:///${exp}?socket=${sock}`, '--rw=read', '--bs=64k', '--offset=1M', '--size=1M', '--output-format=json']);
    let f = await scrape();
    const s = { session: 'mx', disk: 'disk0' };
    expect(sampleValue(f, 'rebound_disk_operations_total', { export: exp, op: 'write' })).toBe(job.write.total_ios);
    expect(sampleValue(f, 'rebound_disk_bytes_total', { export: exp, op: 'write' })).toBe(job.write.io_bytes);
    expect(sampleValue(f, 'rebound_session_overlay_bytes', s)).toBeGreaterThanOrEqual(1024 * 1024);
    expect(sampleValue(f, 'rebound_session_overlay_quota_bytes', s)).toBe(QUOTA);
    // 128 writes at 100 IOPS: the limiter made them wait (the burst is below 128).
    expect(sampleValue(f, 'rebound_session_qos_throttled_seconds_total', s)).toBeGreaterThan(0);
    expect(sampleValue(f, 'rebound_session_age_seconds', { session: 'mx' })).toBeGreaterThanOrEqual(0);
    expect(sampleValue(f, 'rebound_exports', { kind: 'session' })).toBe(1);
    expect(sampleValue(f, 'rebound_repo_points')).toBe(1);
    expect(sampleValue(f, 'rebound_repo_logical_bytes')).toBe(64 * 1024 * 1024);
    expect(sampleValue(f, 'rebound_repo_chunks')).toBeGreaterThan(0);
    expect(sampleValue(f, 'rebound_repo_stored_bytes')).toBeGreaterThan(0);
    expect(sampleValue(f, 'rebound_chunk_cache_misses_total')).toBeGreaterThan(0);

    const target = path.join(dir, 'mx-disk0.raw');
    await api('POST', '/v1/sessions/mx/migrate', { to: target });
    // Bounded by polls: the copy of 64 MiB reaches in step.
    for (let i = 0; i < 300; i++) {
      const st = await api('GET', '/v1/sessions/mx');
      if (st.disks[0].state === 'in-step') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    f = await scrape();
    expect(sampleValue(f, 'rebound_migration_state', { ...s, state: 'in-step' })).toBe(1);
    expect(sampleValue(f, 'rebound_migration_state', { ...s, state: 'copying' })).toBe(0);
    expect(sampleValue(f, 'rebound_migration_remaining_bytes', s)).toBe(0);
    expect(sampleValue(f, 'rebound_migration_copied_bytes', s)).toBeGreaterThan(0);
    expect(sampleValue(f, 'rebound_jobs', { kind: 'migrate' })).toBe(1);
    expect(fs.existsSync(target)).toBe(true);

    await api('DELETE', '/v1/sessions/mx');
    const text = await api('GET', '/metrics');
    parsePrometheusText(text);
    expect(text).not.toContain('session="mx"');
    expect(text).not.toContain(exp);
  });
});
