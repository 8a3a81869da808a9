/** Peers of the NFS tests beyond plain commands: QEMU's nfs:// block driver (Debian qemu-block-extra). */
import fs from 'node:fs';

const QEMU_NFS_MODULES = ['/usr/lib/x86_64-linux-gnu/qemu/block-nfs.so', '/usr/lib/qemu/block-nfs.so'];

export function missingQemuNfs(): string[] {
  if (QEMU_NFS_MODULES.some((m) => fs.existsSync(m))) return [];
  const what = "QEMU's nfs:// driver (Debian package qemu-block-extra)";
  if (process.env.CI) throw new Error(`CI is missing ${what} (tools/setup.sh should install it)`);
  console.warn(`skipping: missing ${what}`);
  return ['qemu-block-extra'];
}
