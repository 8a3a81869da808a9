/**
 * Instant boot through a persistent copy-on-write overlay: a real Linux guest (tools/guest) boots in
 * QEMU (TCG) from a `rebound serve` export `vm=DISK,cow=OVERLAY` over a Unix socket, writes a marker and
 * a 4 MiB payload and powers off; the daemon restarts; a second boot sees both; the export, copied out
 * with qemu-img, is a clean ext4 with the guest's files; DISK never changed (content and mtime).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import {
  bootGuest,
  debugfsCat,
  describeBoot,
  ensureGuest,
  explainBoot,
  killAllGuests,
  missingGuestPeers,
  newMarker,
  payloadContent,
  sha256,
  type BootResult,
  type GuestImages,
} from '../helpers/guest.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const missing = [...missingPeers('qemu-img', 'e2fsck', 'debugfs'), ...missingGuestPeers()];

const BOOT_TIMEOUT_MS = 150_000;

function fileSha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

describe.skipIf(missing.length > 0)('instant boot: a guest runs from a cow export and its writes persist', () => {
  let guest: GuestImages;
  let dir: string;
  let disk: string;
  let overlay: string;
  let sock: string;
  let uri: string;
  let args: string[];
  let daemon: DaemonProcess | undefined;
  let diskSha: string;
  let diskMtimeNs: bigint;
  const marker = newMarker('cowboot');
  const daemonLogs: string[] = [];

  async function startDaemon(): Promise<DaemonProcess> {
    daemon = await startDaemonProcess(args);
    return daemon;
  }
  async function stopDaemon(): Promise<void> {
    const d = daemon;
    daemon = undefined;
    if (!d) return;
    const code = await d.stop('SIGTERM');
    daemonLogs.push(d.stderr());
    expect(code, `daemon exit\n${d.stderr()}`).toBe(0);
  }
  /** The boot's result must be clean; otherwise fail with the console and the daemon's log. */
  function expectCleanBoot(r: BootResult): void {
    const why = `${explainBoot(r)}\n--- daemon stderr ---\n${daemon?.stderr() ?? daemonLogs.at(-1) ?? ''}`;
    expect(r.timedOut, why).toBe(false);
    expect(r.ioErrors, why).toEqual([]);
    expect(r.status, why).toBe('ok');
    expect(r.exitCode, why).toBe(0);
  }

  beforeAll(async () => {
    guest = await ensureGuest();
    dir = tempDir('rebound-cowboot-');
    disk = path.join(dir, 'disk.img');
    overlay = path.join(dir, 'overlay');
    sock = path.join(dir, 'nbd.sock');
    fs.copyFileSync(guest.disk, disk);
    // An old mtime: a write (or a touch) by the daemon would move it.
    const old = new Date('2020-01-01T00:00:00Z');
    fs.utimesSync(disk, old, old);
    diskSha = fileSha256(disk);
    diskMtimeNs = fs.statSync(disk, { bigint: true }).mtimeNs;
    uri = `nbd+unix:///vm?socket=${sock}`;
    args = ['--data', path.join(dir, 'data'), '--nbd', 'none', '--nbd-socket', sock, '--http', 'off', '--log-level', 'debug',
      '--export', `vm=${disk},cow=${overlay}`];
  }, 300_000);

  afterAll(async () => {
    killAllGuests();
    if (daemon) {
      daemon.child.kill('SIGKILL');
      await daemon.exited;
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('boot 1: the guest writes a marker and a payload through the overlay, then powers off', async () => {
    await startDaemon();
    const r = await bootGuest({ drive: uri, action: `write:${marker}`, timeoutMs: BOOT_TIMEOUT_MS, guest });
    console.log(`cow-boot boot 1 (write): ${describeBoot(r)}`);
    expectCleanBoot(r);
    expect(r.fields['marker.written']).toBe(marker);
    expect(r.fields['payload.sha256']).toBe(sha256(payloadContent(marker)));
    await stopDaemon();
    expect(fs.readdirSync(overlay).sort()).toEqual(expect.arrayContaining(['data', 'map']));
    expect(fs.statSync(path.join(overlay, 'map')).size).toBeGreaterThan(0);
    // The overlay holds real data now (the data file may be sparse; count allocated blocks).
    expect(fs.statSync(path.join(overlay, 'data')).blocks * 512).toBeGreaterThanOrEqual(4 * 1024 * 1024);
  }, 300_000);

  it('boot 2, after a daemon restart: the guest sees its marker, payload and the base files', async () => {
    await startDaemon();
    const r = await bootGuest({ drive: uri, action: 'check', timeoutMs: BOOT_TIMEOUT_MS, guest });
    console.log(`cow-boot boot 2 (check): ${describeBoot(r)}`);
    expectCleanBoot(r);
    expect(r.fields).toMatchObject({ marker, payload: 'ok', base: 'ok' });
  }, 300_000);

  it('from outside: the export copied with qemu-img is a clean ext4 holding the guest files', async () => {
    if (!daemon) await startDaemon();
    const copy = path.join(dir, 'export-copy.img');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, copy], { timeoutMs: 120_000 });
    const fsck = await run('e2fsck', ['-fn', copy], { timeoutMs: 120_000 });
    expect(fsck.code, `e2fsck -fn:\n${fsck.stdout}\n${fsck.stderr}`).toBe(0);
    expect((await debugfsCat(copy, '/rebound/marker.txt')).toString()).toBe(`${marker}\n`);
    expect(sha256(await debugfsCat(copy, '/rebound/payload.bin'))).toBe(sha256(payloadContent(marker)));
    for (const [file, sum] of Object.entries(guest.baseFiles)) {
      expect(sha256(await debugfsCat(copy, file)), file).toBe(sum);
    }
    await stopDaemon();
  }, 300_000);

  it('the base image never changed: same sha256, same mtime, no guest files', async () => {
    expect(daemon).toBeUndefined();
    expect(fs.statSync(disk, { bigint: true }).mtimeNs).toBe(diskMtimeNs);
    expect(fileSha256(disk)).toBe(diskSha);
    const fsck = await run('e2fsck', ['-fn', disk]);
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    const ls = await runOk('debugfs', ['-R', 'ls /', disk]);
    expect(ls.stdout).toContain('README.rebound');
    const stat = await run('debugfs', ['-R', 'stat /rebound/marker.txt', disk]);
    expect(stat.stderr).toMatch(/File not found/);
  }, 120_000);
});
