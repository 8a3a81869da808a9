/**
 * A full data directory at the moment of the switch-over (the overlays live there too, so it is
 * the likely way a save fails). The switch is refused with a clear error and the VM keeps running
 * on its overlay; after a restart — graceful, and kill -9 right after the refusal — the disk the
 * VM sees still holds every acknowledged write, the session is back to copying its target, and
 * the way home then works: the target equals what the VM wrote. The data directory is a small
 * tmpfs (needs root for mount).
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
const SIZE = 16 * MiB;
const missing = missingPeers('qemu-io', 'qemu-img', 'mount', 'umount', 'dd');
const notRoot = process.getuid?.() !== 0;

describe.skipIf(missing.length > 0 || notRoot)('switch-over with a full data directory', () => {
  let dir: string;
  let data: string;
  let sock: string;
  let daemon: DaemonProcess | undefined;
  let expected: Buffer;
  const target = (): string => path.join(dir, 'production.raw');
  const args = (): string[] => ['--data', data, '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0'];
  const rb = (...a: string[]) => cli(['--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, ...a]);
  const uri = `nbd+unix:///session/vm/disk0?socket=`;
  const vmWrite = async (pattern: number, off: number, len: number): Promise<void> => {
    // writethrough: every write is FUA, i.e. acknowledged only once stable
    await runOk('qemu-io', ['-f', 'raw', '-t', 'writethrough', '-c', `write -P ${pattern} ${off} ${len}`, uri + sock]);
    expected.fill(pattern, off, off + len);
  };
  const diskEquals = async (): Promise<void> => {
    fs.writeFileSync(path.join(dir, 'expected.raw'), expected);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri + sock, path.join(dir, 'expected.raw')]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
  };
  const report = async (): Promise<{ state: string; disks: Array<{ state: string }> }> => JSON.parse((await rb('sessions', 'vm', '--json')).stdout);
  const waitInStep = async (): Promise<void> => {
    for (let i = 0; i < 600; i++) {
      if ((await report()).disks[0]!.state === 'in-step') return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`never in step: ${JSON.stringify(await report())}`);
  };
  const fill = async (): Promise<void> => {
    await run('dd', ['if=/dev/zero', `of=${path.join(data, 'filler-1')}`, 'bs=1M']);
    await run('dd', ['if=/dev/zero', `of=${path.join(data, 'filler-2')}`, 'bs=4k']);
  };
  const unfill = (): void => {
    for (const f of ['filler-1', 'filler-2']) fs.rmSync(path.join(data, f), { force: true });
  };
  const refusedSwitch = async (): Promise<void> => {
    const sw = await rb('switch', 'vm');
    expect(sw.code, sw.stdout).toBe(1);
    expect(sw.stderr).toMatch(/cannot save the state of session vm \(ENOSPC: no space left on device.*\); nothing was changed/);
    // The VM keeps running on its overlay: what it wrote reads back, and the session is still in step.
    await diskEquals();
    expect((await report()).disks[0]!.state).toBe('in-step');
  };

  beforeAll(async () => {
    dir = tempDir('rebound-fulldata-');
    data = path.join(dir, 'data');
    sock = path.join(dir, 'nbd.sock');
    fs.mkdirSync(data);
    await runOk('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', data]);
    expected = makeImage(path.join(dir, 'disk.raw'), standardLayout(SIZE));
    daemon = await startDaemonProcess(args());
    expect((await rb('backup', 'vm', '--disk', `disk0=${path.join(dir, 'disk.raw')}`)).code).toBe(0);
    expect((await rb('recover', 'vm', '--name', 'vm')).code).toBe(0);
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop('SIGKILL');
    await run('umount', ['-l', data]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses the switch, keeps the VM on its overlay, and loses nothing across graceful and kill -9 restarts', async () => {
    await vmWrite(0x11, 1 * MiB, MiB);
    expect((await rb('migrate', 'vm', '--to', target())).code).toBe(0);
    await waitInStep();
    await vmWrite(0x12, 5 * MiB, 64 * 1024);

    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      await fill();
      await refusedSwitch();
      // Kill at that moment (or stop gracefully), with the data directory still full.
      await daemon!.stop(signal);
      unfill();
      daemon = await startDaemonProcess(args());
      // The switch never took effect: the overlay is the disk, and the copy goes on.
      expect(['copying', 'in-step']).toContain((await report()).disks[0]!.state);
      await diskEquals();
      await vmWrite(signal === 'SIGTERM' ? 0x21 : 0x22, (signal === 'SIGTERM' ? 7 : 9) * MiB, 128 * 1024);
      await waitInStep();
    }

    // Now the way home works, and the target holds every acknowledged write.
    const mig = await rb('migrate', 'vm', '--to', target(), '--switch', '--json');
    expect(mig.code, mig.stderr).toBe(0);
    expect(JSON.parse(mig.stdout).result.switched[0].repaired).toBe(0);
    expect(fs.existsSync(path.join(data, 'sessions', 'vm', 'overlays', 'disk0'))).toBe(false);
    await diskEquals(); // served by the target now
    expect((await rb('finish', 'vm')).code).toBe(0);
    expect(fs.readFileSync(target()).equals(expected)).toBe(true);
  }, 240_000);
});
