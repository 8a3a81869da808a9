/**
 * Sessions and restore points on the iSCSI target of the real daemon: `rebound backup`, then
 * `rebound recover` prints the session's portal, IQN and one LUN per disk; iscsi-ls lists the
 * session and the restore point (read-only) targets; the session LUN reads equal to the backed-up
 * disk; `recover --no-iscsi` keeps a session off iSCSI; `rebound discard` takes the target away.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/cli.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const MiB = 1024 * 1024;
const missing = missingPeers('iscsi-ls', 'qemu-img');

describe.skipIf(missing.length > 0)('recovery sessions on the iSCSI target', () => {
  let dir: string;
  let daemon: DaemonProcess | undefined;
  const rb = async (...a: string[]) => {
    const r = await cli(['--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, ...a]);
    expect(r.code, r.stderr).toBe(0);
    return r;
  };
  const portal = (): string => /iSCSI: portal at (127\.0\.0\.1:\d+)/.exec(daemon!.stdout())![1]!;
  const targets = async (): Promise<string> => (await runOk('iscsi-ls', ['-s', `iscsi://${portal()}`])).stdout;

  beforeAll(async () => {
    dir = tempDir('rebound-iscsi-sessions-');
    makeImage(path.join(dir, 'disk.raw'), standardLayout(8 * MiB));
    daemon = await startDaemonProcess(['--data', path.join(dir, 'data'), '--nbd', 'none', '--http', '127.0.0.1:0', '--iscsi', '127.0.0.1:0']);
    await rb('backup', 'Web1', '--disk', `disk0=${path.join(dir, 'disk.raw')}`);
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop('SIGTERM');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('recover prints the target; iscsi-ls lists session and point; the LUN equals the disk; discard removes it', async () => {
    const r = await rb('recover', 'Web1', '--name', 'web1-rec');
    const iqn = 'iqn.2026-12.org.rebound:session.web1-rec';
    expect(r.stdout).toContain(`iSCSI:   portal ${portal()}, target ${iqn}`);
    expect(r.stdout).toContain(`LUN 0: disk disk0  iscsi://${portal()}/${iqn}/0`);
    const ls = await targets();
    expect(ls).toContain(`Target:${iqn}`);
    expect(ls).toMatch(/Target:iqn\.2026-12\.org\.rebound:point\.web1\.\d{8}t\d{6}z /);
    expect(ls).toContain('Target:iqn.2026-12.org.rebound:point.web1.latest');
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', path.join(dir, 'disk.raw'), `iscsi://${portal()}/${iqn}/0`]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);

    await rb('recover', 'Web1', '--name', 'no-iscsi', '--no-iscsi');
    expect(await targets()).not.toContain('session.no-iscsi');

    await rb('discard', 'web1-rec');
    expect(await targets()).not.toContain(`Target:${iqn}`);
  }, 120_000);
});
