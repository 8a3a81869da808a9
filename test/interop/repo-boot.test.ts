/**
 * Instant recovery from the repository: the small Linux guest's disk is backed up into the
 * repository, the daemon restarts with a copy-on-write export of that restore point
 * (`repo:guest/disk0,cow`), QEMU (TCG) boots the guest from it, the guest writes and powers off,
 * and a second boot sees the write. The restore point itself never changes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { bootGuest, describeBoot, ensureGuest, explainBoot, killAllGuests, missingGuestPeers, newMarker, type BootResult, type GuestImages } from '../helpers/guest.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const missing = [...missingPeers('qemu-img'), ...missingGuestPeers()];

describe.skipIf(missing.length > 0)('boot from a restore point through a cow export', () => {
  let guest: GuestImages;
  let dir: string;
  let daemon: DaemonProcess | undefined;
  const marker = newMarker('repoboot');

  beforeAll(async () => {
    guest = await ensureGuest();
    dir = tempDir('rebound-repoboot-');
  }, 300_000);
  afterAll(async () => {
    killAllGuests();
    if (daemon) await daemon.stop('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const clean = (r: BootResult): void => {
    const why = `${explainBoot(r)}\n--- daemon stderr ---\n${daemon?.stderr() ?? ''}`;
    expect(r.timedOut, why).toBe(false);
    expect(r.ioErrors, why).toEqual([]);
    expect(r.status, why).toBe('ok');
  };

  it('backs up the guest disk, boots it from the restore point, keeps the guest\'s writes, leaves the point unchanged', async () => {
    const data = path.join(dir, 'data');
    const sock = path.join(dir, 'nbd.sock');
    daemon = await startDaemonProcess(['--data', data, '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', '--source-dir', path.dirname(guest.disk)]);
    await runOk(process.execPath, [CLI, '--server', `http://${daemon.http}`, '--token-file', daemon.tokenFile, 'backup', 'guest', '--disk', `disk0=${guest.disk}`]);
    expect(await daemon.stop('SIGTERM')).toBe(0);

    const args = ['--data', data, '--nbd', 'none', '--nbd-socket', sock, '--http', 'off', '--export', 'vm=repo:guest/disk0,cow'];
    daemon = await startDaemonProcess(args);
    const uri = `nbd+unix:///vm?socket=${sock}`;
    const first = await bootGuest({ drive: uri, action: `write:${marker}`, timeoutMs: 150_000, guest });
    console.log(`repo-boot boot 1 (write): ${describeBoot(first)}`);
    clean(first);
    expect(first.fields['marker.written']).toBe(marker);
    expect(await daemon.stop('SIGTERM')).toBe(0);

    daemon = await startDaemonProcess(args);
    const second = await bootGuest({ drive: uri, action: 'check', timeoutMs: 150_000, guest });
    console.log(`repo-boot boot 2 (check): ${describeBoot(second)}`);
    clean(second);
    expect(second.fields).toMatchObject({ marker, base: 'ok' });

    // The restore point still holds the pristine disk.
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `nbd+unix:///guest@latest/disk0?socket=${sock}`, guest.disk]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
    expect(await daemon.stop('SIGTERM')).toBe(0);
    daemon = undefined;
  }, 400_000);
});
