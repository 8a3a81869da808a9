/**
 * The one-node Ceph RGW of the S3 tests (../shared/notes/s3-ceph-rgw.md): tools/bench/rgw.mjs,
 * shared with the benchmark (tools/bench/s3.mjs). Ports and directory are picked fresh at every
 * start, so several test files and other users of the machine can run their own at once.
 */
export { freePort, hasRgw, killGatewayNow, RGW_ACCESS_KEY, RGW_SECRET_KEY, startRgw, type Rgw } from '../../tools/bench/rgw.mjs';

import fs from 'node:fs';
import { S3Client } from '@aws-sdk/client-s3';
import { cli } from './cli.js';
import { startDaemonProcess, type DaemonProcess } from './daemon-process.js';
import { tempDir } from './images.js';
import { missingPeers } from './peers.js';
import { hasRgw as rgwInstalled, startRgw as launchRgw, type Rgw as RgwHandle } from '../../tools/bench/rgw.mjs';

/** The peers an RGW test file lacks: `peers` and RGW itself (an error in CI, where setup.sh installs it). */
export function missingRgwPeers(...peers: string[]): string[] {
  const missing = missingPeers(...peers);
  if (!rgwInstalled()) {
    if (process.env.CI) throw new Error('CI is missing Ceph RGW (tools/setup.sh installs ceph-mon ceph-osd radosgw ceph-common)');
    console.warn('skipping: Ceph RGW is not installed (run tools/setup.sh)');
    missing.push('radosgw');
  }
  return missing;
}

/** One RGW, a temp directory and an SDK client on it, and the gateways a test file starts. */
export interface RgwTestbed {
  rgw: RgwHandle;
  dir: string;
  s3: S3Client;
  daemons: DaemonProcess[];
}

export async function openRgwTestbed(tmpPrefix: string): Promise<RgwTestbed> {
  const rgw = await launchRgw();
  const s3 = new S3Client({ endpoint: rgw.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: rgw.env.AWS_ACCESS_KEY_ID!, secretAccessKey: rgw.env.AWS_SECRET_ACCESS_KEY! } });
  return { rgw, dir: tempDir(tmpPrefix), s3, daemons: [] };
}

/** Kills the gateways, stops RGW, removes the directory (whatever of it was opened). */
export async function closeRgwTestbed(t: RgwTestbed | undefined): Promise<void> {
  if (!t) return;
  for (const d of [...t.daemons]) await d.stop('SIGKILL');
  t.s3.destroy();
  await t.rgw.stop();
  fs.rmSync(t.dir, { recursive: true, force: true });
}

/** A `rebound serve` gateway on the testbed's RGW (credentials from its environment). */
export async function startGateway(t: RgwTestbed, data: string, extra: string[] = []): Promise<DaemonProcess> {
  const d = await startDaemonProcess(['--data', data, '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0', '--disk-cache-size', '64M', ...extra], { env: t.rgw.env, timeoutMs: 60_000 });
  t.daemons.push(d);
  return d;
}

export async function stopGateway(t: RgwTestbed, d: DaemonProcess): Promise<void> {
  await d.stop('SIGTERM');
  t.daemons.splice(t.daemons.indexOf(d), 1);
}

/** `rebound ARGS` against gateway `d`, which must succeed; its stdout. */
export async function gatewayOk(d: DaemonProcess, args: string[]): Promise<string> {
  const r = await cli(['--server', d.url!, '--token-file', d.tokenFile, ...args]);
  if (r.code !== 0) throw new Error(`rebound ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}
