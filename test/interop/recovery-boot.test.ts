/**
 * The end-to-end instant recovery: back up the small Linux guest's disk, `rebound recover` it,
 * boot it in QEMU (TCG) from the session export, keep the guest writing, `rebound migrate
 * --switch` to a target served by qemu-nbd while it runs, let the guest write more after the
 * switch, and shut it down. The target then holds every guest write (e2fsck clean, files checked
 * with debugfs), the overlay is gone and the restore point is unchanged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { debugfsCat, ensureGuest, explainBoot, killAllGuests, loopFileContent, loopFilePath, missingGuestPeers, newMarker, payloadContent, startGuest, type GuestImages } from '../helpers/guest.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const missing = [...missingPeers('qemu-img', 'qemu-nbd', 'e2fsck', 'debugfs'), ...missingGuestPeers()];

describe.skipIf(missing.length > 0)('instant recovery end to end: boot from backup, migrate live, switch', () => {
  let guest: GuestImages;
  let dir: string;
  let daemon: DaemonProcess | undefined;
  let qnbd: ChildProcess | undefined;

  beforeAll(async () => {
    guest = await ensureGuest();
    dir = tempDir('rebound-recoveryboot-');
  }, 300_000);
  afterAll(async () => {
    killAllGuests();
    qnbd?.kill('SIGKILL');
    await daemon?.stop('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps every guest write across the live migration and switch-over', async () => {
    const data = path.join(dir, 'data');
    const sock = path.join(dir, 'nbd.sock');
    daemon = await startDaemonProcess(['--data', data, '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', '--source-dir', path.dirname(guest.disk)]);
    const rb = (...a: string[]) => runOk(process.execPath, [CLI, '--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, ...a], { timeoutMs: 240_000 });
    await rb('backup', 'guest', '--disk', `disk0=${guest.disk}`);
    const rec = JSON.parse((await rb('recover', 'guest', '--name', 'vm', '--json')).stdout) as { disks: Array<{ nbdUri: string }> };
    const uri = rec.disks[0]!.nbdUri;
    expect(uri).toBe(`nbd+unix:///session/vm/disk0?socket=${encodeURIComponent(sock)}`);

    const target = path.join(dir, 'production.raw');
    fs.writeFileSync(target, '');
    fs.truncateSync(target, guest.diskBytes);
    const tsock = path.join(dir, 'prod.sock');
    qnbd = spawn('qemu-nbd', ['-f', 'raw', '-t', '-k', tsock, '--cache=writeback', target], { stdio: 'ignore' });
    for (let i = 0; i < 200 && !fs.existsSync(tsock); i++) await new Promise((r) => setTimeout(r, 25));

    // The guest writes loop files while the migration runs (at most 40, and never past its disk's free
    // space), until the test types 'switched' on its console; then 3 more, which land on the target.
    const marker = newMarker('ir');
    const vm = await startGuest({ drive: uri, action: `write:${marker}+loop:40:switched+loop:3+check`, timeoutMs: 280_000, guest });
    await vm.waitFor(/REBOUND-LOOP synced=2\b/, 200_000);
    const mig = await rb('migrate', 'vm', '--to', `nbd+unix:///?socket=${tsock}`, '--switch', '--json');
    const job = JSON.parse(mig.stdout) as { state: string; result: { switched: Array<{ repaired: number }> } };
    expect(job.state).toBe('succeeded');
    expect(job.result.switched[0]!.repaired).toBe(0);
    const atSwitch = Math.max(...[...vm.console().matchAll(/REBOUND-LOOP synced=(\d+)/g)].map((m) => Number(m[1])));
    vm.send('switched');
    const r = await vm.done;
    const why = `${explainBoot(r)}\n--- daemon stderr ---\n${daemon.stderr()}`;
    expect(r.timedOut, why).toBe(false);
    expect(r.ioErrors, why).toEqual([]);
    expect(r.status, why).toBe('ok');
    expect(r.fields, why).toMatchObject({ marker, payload: 'ok', base: 'ok', loop: 'ok', 'loop.heard': 'switched', 'loop.files': String(r.loopSynced + 1) });
    expect(r.fields['loop.full'], why).toBeUndefined();
    // The last step's 3 files started after the guest heard of the switch.
    expect(r.loopSynced, 'the guest kept writing after the switch').toBeGreaterThanOrEqual(atSwitch + 3);

    // The overlay is gone; the session runs on production storage.
    expect(fs.existsSync(path.join(data, 'sessions', 'vm', 'overlays', 'disk0'))).toBe(false);
    await rb('finish', 'vm');
    qnbd.kill('SIGTERM');
    await new Promise((res) => qnbd!.once('exit', res));
    qnbd = undefined;

    // The production copy holds every write: a clean filesystem and the guest's files.
    const fsck = await run('e2fsck', ['-fn', target]);
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    expect((await debugfsCat(target, '/rebound/marker.txt')).toString().trim()).toBe(marker);
    expect((await debugfsCat(target, '/rebound/payload.bin')).equals(payloadContent(marker))).toBe(true);
    for (let n = 0; n <= r.loopSynced; n++) expect((await debugfsCat(target, loopFilePath(n))).equals(loopFileContent(n)), `loop file ${n}`).toBe(true);

    // The restore point never changed.
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `nbd+unix:///guest@latest/disk0?socket=${sock}`, guest.disk]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
    expect(await daemon.stop('SIGTERM')).toBe(0);
    daemon = undefined;
  }, 420_000);
});
