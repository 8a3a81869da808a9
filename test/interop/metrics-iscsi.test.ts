/**
 * The counting layer sits under every front end: qemu-io writes and reads a daemon's ad-hoc
 * export over iSCSI (libiscsi), and /metrics counts exactly those bytes under the export, as
 * for NBD (metrics-fio.test.ts).
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';

const missing = missingPeers('qemu-io');
let d: DaemonProcess;
let portal: string;

beforeAll(async () => {
  if (missing.length) return;
  const dir = tempDir();
  d = await startDaemonProcess(['--data', path.join(dir, 'data'), '--nbd', 'none', '--http', '127.0.0.1:0', '--iscsi', '127.0.0.1:0', '--export', 'm=memory:16M']);
  const h = (await (await fetch(`${d.url}/v1/health`)).json()) as { endpoints: { iscsi: string[] } };
  portal = h.endpoints.iscsi[0]!;
});

afterAll(async () => {
  if (missing.length) return;
  await d?.stop();
});

const scrape = async () => parsePrometheusText(await (await fetch(`${d.url}/metrics`, { headers: d.auth })).text());

describe.skipIf(missing.length > 0)('metrics over iSCSI', () => {
  it('qemu-io writes and reads over iSCSI are counted under the export', async () => {
    const before = await scrape();
    const url = `iscsi://${portal}/iqn.2026-12.org.rebound:export.m/0`;
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x5b 4M 512k', '-c', 'read -P 0x5a 0 1M', url]);
    const after = await scrape();
    const delta = (name: string, op: string) => (sampleValue(after, name, { export: 'm', op }) ?? 0) - (sampleValue(before, name, { export: 'm', op }) ?? 0);
    expect(delta('rebound_disk_bytes_total', 'write')).toBe(1024 * 1024 + 512 * 1024);
    expect(delta('rebound_disk_bytes_total', 'read')).toBeGreaterThanOrEqual(1024 * 1024);
    expect(delta('rebound_disk_operations_total', 'write')).toBeGreaterThanOrEqual(2);
    expect(sampleValue(after, 'rebound_connections', { front_end: 'iscsi' })).toBe(0);
  });
});
