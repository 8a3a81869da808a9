/**
 * The disk-bootable test guest of the verification tests (tools/guest/build-disk.sh): an MBR disk
 * with SYSLINUX, the Debian kernel and a busybox initramfs that serves HTTP on port 80 and a banner
 * on port 7 and prints MARKER on the serial console; and its twin with the kernel zeroed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from './daemon-process.js';
import { missingGuestPeers, readGuestEnv } from './guest.js';
import { missingPeers } from './peers.js';
import { runOk } from './run.js';

export const BOOT_GUEST_BUILD = path.join(REPO, 'tools/guest/build-disk.sh');
export const BOOT_GUEST_DIR = path.join(REPO, 'test-results/guest-boot');

export interface BootGuest {
  disk: string;
  brokenDisk: string;
  marker: string;
  httpPort: number;
  bannerPort: number;
}

/** What the build and the boots need; a missing piece skips with a printed reason (missingPeers). */
export function missingBootGuestPeers(): string[] {
  const missing = [...missingPeers('qemu-system-x86_64', 'syslinux', 'mcopy', 'mkfs.fat', 'sfdisk'), ...missingGuestPeers()];
  for (const [file, pkg] of [['/usr/lib/syslinux/mbr/mbr.bin', 'syslinux-common'], ['/usr/lib/systemd/boot/efi/systemd-bootx64.efi', 'systemd-boot-efi']]) {
    if (fs.existsSync(file!)) continue;
    if (process.env.CI) throw new Error(`CI is missing ${pkg} (tools/setup.sh should install it)`);
    console.warn(`skipping: missing ${pkg} (run tools/setup.sh)`);
    missing.push(pkg!);
  }
  return missing;
}

let built: Promise<BootGuest> | undefined;

export function ensureBootGuest(dir = BOOT_GUEST_DIR): Promise<BootGuest> {
  built ??= (async () => {
    await runOk('bash', [BOOT_GUEST_BUILD, dir], { timeoutMs: 300_000 });
    const env = readGuestEnv(dir);
    return { disk: path.join(dir, 'disk.img'), brokenDisk: path.join(dir, 'disk-broken.img'), marker: env.MARKER!, httpPort: Number(env.HTTP_PORT), bannerPort: Number(env.BANNER_PORT) };
  })();
  return built;
}
