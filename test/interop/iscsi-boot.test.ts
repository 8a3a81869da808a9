/**
 * QEMU boots the small Linux guest with its disk on the iSCSI target of the daemon process: the
 * guest's disk is backed up, `rebound recover` publishes the session, and QEMU runs from
 * `iscsi://127.0.0.1:PORT/iqn.2026-12.org.rebound:session.vm/0`. The guest writes a marker and a
 * payload, then keeps writing loop files (WRITEs, SYNCHRONIZE CACHE) while `rebound migrate
 * --switch` copies the disk to a production file and switches it over under the running guest; it
 * writes 3 more files after the test tells it the switch happened. The writes first land in the
 * session's overlay (the restore point and the source image never change); at the end the
 * production file holds every one of them (e2fsck clean, files checked with debugfs).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { debugfsCat, describeBoot, ensureGuest, explainBoot, killAllGuests, loopFileContent, loopFilePath, missingGuestPeers, newMarker, payloadContent, startGuest, type GuestImages } from '../helpers/guest.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const missing = [...missingPeers('qemu-img', 'debugfs', 'e2fsck'), ...missingGuestPeers()];
const fileSha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

describe.skipIf(missing.length > 0)('QEMU boots a guest from the iSCSI target and keeps writing through a migration', () => {
  let guest: GuestImages;
  let dir: string;
  let daemon: DaemonProcess | undefined;

  beforeAll(async () => {
    guest = await ensureGuest();
    dir = tempDir('rebound-iscsiboot-');
  }, 300_000);

  afterAll(async () => {
    killAllGuests();
    await daemon?.stop('SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the guest boots from iscsi://, writes into the overlay, and every write survives the live migration and switch', async () => {
    const source = path.join(dir, 'source.img');
    fs.copyFileSync(guest.disk, source);
    const sourceSha = fileSha(source);
    const data = path.join(dir, 'data');
    daemon = await startDaemonProcess(['--data', data, '--nbd', 'none', '--http', '127.0.0.1:0', '--iscsi', '127.0.0.1:0', '--source-dir', dir]);
    const rb = (...a: string[]) => runOk(process.execPath, [CLI, '--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, ...a], { timeoutMs: 240_000 });
    await rb('backup', 'guest', '--disk', `disk0=${source}`);
    const rec = JSON.parse((await rb('recover', 'guest', '--name', 'vm', '--json')).stdout) as { iscsi: { portals: string[]; luns: Array<{ url: string }> } };
    const drive = rec.iscsi.luns[0]!.url;
    expect(drive).toBe(`iscsi://${rec.iscsi.portals[0]}/iqn.2026-12.org.rebound:session.vm/0`);

    const marker = newMarker('iscsiboot');
    const vm = await startGuest({ drive, action: `write:${marker}+loop:40:switched+loop:3+check`, timeoutMs: 280_000, guest });
    await vm.waitFor(/REBOUND-LOOP synced=2\b/, 200_000);
    // So far the writes live in the session's overlay: the restore point still equals the source.
    expect(fs.readdirSync(path.join(data, 'sessions', 'vm', 'overlays', 'disk0')).length).toBeGreaterThan(0);
    const pointLun = `iscsi://${rec.iscsi.portals[0]}/iqn.2026-12.org.rebound:point.guest.latest/0`;
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', pointLun, source], { timeoutMs: 120_000 });
    expect(cmp.stdout, `${cmp.stderr}\n--- daemon stderr ---\n${daemon.stderr().slice(-4000)}`).toContain('Images are identical');

    const target = path.join(dir, 'production.raw');
    const mig = await run(process.execPath, [CLI, '--server', `http://${daemon.http}`, '--token-file', daemon.tokenFile, 'migrate', 'vm', '--to', target, '--switch', '--json'], { timeoutMs: 240_000 });
    const migWhy = `migrate exited ${mig.code}:\n${mig.stdout}\n${mig.stderr}\n--- daemon stderr ---\n${daemon.stderr().slice(-4000)}`;
    expect(mig.code, migWhy).toBe(0);
    const job = JSON.parse(mig.stdout) as { state: string; result: { switched: Array<{ repaired: number }> } };
    expect(job.state, migWhy).toBe('succeeded');
    expect(job.result.switched[0]!.repaired, migWhy).toBe(0);
    const atSwitch = Math.max(...[...vm.console().matchAll(/REBOUND-LOOP synced=(\d+)/g)].map((m) => Number(m[1])));
    vm.send('switched');
    const r = await vm.done;
    console.log(`iscsi-boot: ${describeBoot(r)}`);
    const why = `${explainBoot(r)}\n--- daemon stderr ---\n${daemon.stderr()}`;
    expect(r.timedOut, why).toBe(false);
    expect(r.ioErrors, why).toEqual([]);
    expect(r.status, why).toBe('ok');
    expect(r.fields, why).toMatchObject({ marker, payload: 'ok', base: 'ok', loop: 'ok', 'loop.heard': 'switched', 'loop.files': String(r.loopSynced + 1) });
    expect(r.fields['loop.full'], why).toBeUndefined();
    expect(r.loopSynced, 'the guest kept writing after the switch').toBeGreaterThanOrEqual(atSwitch + 3);

    // The overlay is gone; the production file holds every write.
    expect(fs.existsSync(path.join(data, 'sessions', 'vm', 'overlays', 'disk0'))).toBe(false);
    await rb('finish', 'vm');
    const fsck = await run('e2fsck', ['-fn', target]);
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    expect((await debugfsCat(target, '/rebound/marker.txt')).toString().trim()).toBe(marker);
    expect((await debugfsCat(target, '/rebound/payload.bin')).equals(payloadContent(marker))).toBe(true);
    for (let n = 0; n <= r.loopSynced; n++) expect((await debugfsCat(target, loopFilePath(n))).equals(loopFileContent(n)), `loop file ${n}`).toBe(true);
    expect(fileSha(source)).toBe(sourceSha);
    expect(await daemon.stop('SIGTERM')).toBe(0);
    daemon = undefined;
  }, 420_000);
});
