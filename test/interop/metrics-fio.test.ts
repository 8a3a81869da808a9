/**
 * /metrics of a real daemon process moves with real I/O: fio (nbd engine) runs a random
 * read/write job against a memory export; the deltas of rebound_disk_operations_total and
 * rebound_disk_bytes_total must match fio's own counts within 1 % (the disk is filled first: a
 * read of a range the disk calls zero is answered with NBD hole chunks and never reaches it). Scraped with a viewer token,
 * as Prometheus would, and parsed by the strict text-format parser.
 */
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
let viewer: string;

beforeAll(async () => {
  if (missing.length) return;
  const dir = tempDir();
  sock = path.join(dir, 'nbd.sock');
  d = await startDaemonProcess(['--data', path.join(dir, 'data'), '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', '--export', 'm=memory:64M']);
  const r = await fetch(`${d.url}/v1/tokens`, { method: 'POST', headers: { ...d.auth, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'prometheus', role: 'viewer' }) });
  expect(r.status).toBe(201);
  viewer = ((await r.json()) as { token: string }).token;
});

afterAll(async () => {
  if (missing.length) return;
  await d?.stop();
});

async function scrape() {
  const r = await fetch(`${d.url}/metrics`, { headers: { authorization: `Bearer ${viewer}` } });
  expect(r.status).toBe(200);
  return parsePrometheusText(await r.text());
}

describe.skipIf(missing.length > 0)(`metrics against fio${missing.length ? ` (missing: ${missing.join(', ')})` : ''}`, () => {
  it('operation and byte counters follow fio within 1 %', async () => {
    // Fill the disk first: NBD answers reads of ranges the disk calls zero with hole chunks and
    // never reads them (docs/metrics.md), so on a written disk every fio read is one disk read.
    await runOk('fio', ['--name=fill', '--ioengine=nbd', `--uri=nbd+unix:///m?socket=${sock}`, '--rw=write', '--bs=1M', '--size=64M', '--output-format=json']);
    const before = await scrape();
    const fio = await runOk('fio', [
      '--name=metrics', '--ioengine=nbd', `--uri=nbd+unix:///m?socket=${sock}`, '--rw=randrw', '--rwmixread=60', '--bsrange=4k-64k',
      '--iodepth=8', '--size=64M', '--io_size=48M', '--output-format=json',
    ]);
    const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf('{'))).jobs[0];
    expect(job.error).toBe(0);
    const after = await scrape();
    const delta = (name: string, op: string) =>
      (sampleValue(after, name, { export: 'm', op }) ?? 0) - (sampleValue(before, name, { export: 'm', op }) ?? 0);
    const within1 = (ours: number, theirs: number) => {
      expect(theirs).toBeGreaterThan(0);
      expect(Math.abs(ours - theirs) / theirs).toBeLessThanOrEqual(0.01);
    };
    within1(delta('rebound_disk_operations_total', 'read'), job.read.total_ios);
    within1(delta('rebound_disk_operations_total', 'write'), job.write.total_ios);
    within1(delta('rebound_disk_bytes_total', 'read'), job.read.io_bytes);
    within1(delta('rebound_disk_bytes_total', 'write'), job.write.io_bytes);
    expect(delta('rebound_disk_errors_total', 'write') + delta('rebound_disk_errors_total', 'read')).toBe(0);
    // The latency histogram saw every request.
    expect(delta('rebound_disk_request_duration_seconds_count', 'write')).toBe(delta('rebound_disk_operations_total', 'write'));
    expect(sampleValue(after, 'rebound_connections', { front_end: 'nbd' })).toBe(0);
    expect(after.has('nodejs_eventloop_lag_p99_seconds')).toBe(true);
    console.log(`fio: ${job.read.total_ios} reads / ${job.read.io_bytes} B, ${job.write.total_ios} writes / ${job.write.io_bytes} B; metrics: ${delta('rebound_disk_operations_total', 'read')} / ${delta('rebound_disk_bytes_total', 'read')}, ${delta('rebound_disk_operations_total', 'write')} / ${delta('rebound_disk_bytes_total', 'write')}`);
  });

  it('a viewer token may read /metrics; no token may not', async () => {
    expect((await fetch(`${d.url}/metrics`)).status).toBe(401);
  });
});
