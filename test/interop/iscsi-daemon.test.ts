/**
 * The iSCSI target in the real daemon process, without the HTTP API: `rebound serve --iscsi
 * 127.0.0.1:0 --export vm1=IMAGE,cow` offers the ad-hoc export as `iqn.2026-12.org.rebound:export.vm1`
 * (LUN 0). QEMU writes over iscsi:// and flushes (SYNCHRONIZE CACHE); after kill -9 and a restart
 * the acknowledged writes read back from the overlay, and the source image never changed.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const missing = missingPeers('qemu-io', 'qemu-img', 'iscsi-ls');
const MiB = 1024 * 1024;
const IQN = 'iqn.2026-12.org.rebound:export.vm1';
let dir: string;
let image: string;
let daemon: DaemonProcess | undefined;

const args = (): string[] => ['--data', path.join(dir, 'data'), '--http', 'off', '--nbd', 'none', '--iscsi', '127.0.0.1:0', '--export', `vm1=${image},cow`];
const portal = (d: DaemonProcess): string => /iSCSI: portal at (127\.0\.0\.1:\d+)/.exec(d.stdout())![1]!;
const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

beforeAll(async () => {
  if (missing.length) return;
  dir = tempDir('rebound-iscsi-daemon-');
  image = path.join(dir, 'vm1.raw');
  makeImage(image, standardLayout(16 * MiB));
  daemon = await startDaemonProcess(args());
}, 30_000);

afterAll(async () => {
  await daemon?.stop('SIGKILL');
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(missing.length > 0)('iSCSI target in the daemon process', () => {
  it('serves an export over iSCSI; flushed writes survive kill -9 in the overlay, the source is untouched', async () => {
    const before = sha(image);
    const ls = await runOk('iscsi-ls', ['-s', `iscsi://${portal(daemon!)}`]);
    expect(ls.stdout).toContain(`Target:${IQN}`);
    const url = `iscsi://${portal(daemon!)}/${IQN}/0`;
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 3M 2M', '-c', 'flush', url]);
    await daemon!.stop('SIGKILL');
    daemon = await startDaemonProcess(args());
    const url2 = `iscsi://${portal(daemon)}/${IQN}/0`;
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x77 3M 2M', url2]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(sha(image)).toBe(before);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, url2]);
    expect(cmp.code).toBe(1); // differs exactly by the overlay's writes
    expect(cmp.stdout).toMatch(/Content mismatch at offset 3145728/);
  }, 60_000);
});
