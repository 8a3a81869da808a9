/**
 * QEMU boots the small Linux guest with its disk on `iscsi://127.0.0.1:PORT/IQN/0`, served by the
 * daemon process (`rebound serve --iscsi 127.0.0.1:0 --export vm1=BASE,cow`, no HTTP API). The
 * guest writes a marker and a payload and syncs (WRITEs, SYNCHRONIZE CACHE, UNMAP from fstrim);
 * after QEMU exits they read back through iSCSI, and the base image never changed.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { bootGuest, debugfsCat, describeBoot, ensureGuest, explainBoot, killAllGuests, missingGuestPeers, newMarker, payloadContent, sha256, type GuestImages } from '../helpers/guest.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';

const missing = [...missingPeers('qemu-img', 'debugfs'), ...missingGuestPeers()];
const fileSha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const IQN = 'iqn.2026-12.org.rebound:export.vm1';

describe.skipIf(missing.length > 0)('QEMU boots a guest from the iSCSI target', () => {
  let guest: GuestImages;
  let dir: string;
  let base: string;
  let baseSha: string;
  let daemon: DaemonProcess | undefined;
  const marker = newMarker('iscsiboot');

  beforeAll(async () => {
    guest = await ensureGuest();
    dir = tempDir('rebound-iscsiboot-');
    base = path.join(dir, 'base.img');
    fs.copyFileSync(guest.disk, base);
    baseSha = fileSha(base);
    daemon = await startDaemonProcess(['--data', path.join(dir, 'data'), '--http', 'off', '--nbd', 'none', '--iscsi', '127.0.0.1:0', '--export', `vm1=${base},cow`]);
  }, 300_000);

  afterAll(async () => {
    killAllGuests();
    await daemon?.stop('SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the guest boots from iscsi://, writes into the overlay; the base never changes', async () => {
    const portal = /iSCSI: portal at (127\.0\.0\.1:\d+)/.exec(daemon!.stdout())![1]!;
    const drive = `iscsi://${portal}/${IQN}/0`;
    const r = await bootGuest({ drive, action: `write:${marker}`, timeoutMs: 150_000, guest });
    console.log(`iscsi-boot: ${describeBoot(r)}`);
    const why = `${explainBoot(r)}\n--- daemon stderr ---\n${daemon!.stderr()}`;
    expect(r.timedOut, why).toBe(false);
    expect(r.ioErrors, why).toEqual([]);
    expect(r.status, why).toBe('ok');
    expect(r.fields['payload.sha256'], why).toBe(sha256(payloadContent(marker)));
    const copy = path.join(dir, 'copy.img');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', drive, copy], { timeoutMs: 120_000 });
    expect((await debugfsCat(copy, '/rebound/marker.txt')).toString()).toBe(`${marker}\n`);
    expect(sha256(await debugfsCat(copy, '/rebound/payload.bin'))).toBe(sha256(payloadContent(marker)));
    expect(fileSha(base)).toBe(baseSha);
  }, 300_000);
});
