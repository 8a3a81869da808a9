/**
 * Who owns the real files of session folders, and which attribute values a client may set.
 *
 * Design notes:
 *  - The daemon runs as root and any NFS client can claim any uid with AUTH_SYS, so nothing a
 *    client sends decides who owns a file on disk or whether it can run there. Files and
 *    directories clients create are owned on disk by SERVICE_UID:SERVICE_GID (65534, "nobody"),
 *    whatever uid the client claims; the daemon's own files (descriptors, config copies) stay
 *    root's. Regular files never get execute, set-uid, set-gid or sticky bits on disk (the
 *    hypervisor's files — vmx, vmdk, logs, nvram, swap — never need them); directories keep at most
 *    rwxrwxrwx (never set-id or sticky). So no client can plant a program that runs as anyone.
 *  - SETATTR of uid/gid is checked as knfsd does (only AUTH_SYS uid 0 may change the owner, a
 *    non-root caller may not give a file away or change its group: NFS3ERR_PERM), then dropped:
 *    it is never applied on disk. Attributes report the real owner (65534 for client files, 0 for
 *    the daemon's own); ESXi, QEMU and libnfs do not need to own the files they use (the server
 *    does not check permissions: ACCESS grants what the export allows).
 *  - Every client value that reaches `fs.*` is validated first: Node aborts the process on a mode
 *    that is not an int32 (fs.open, fs.mkdir, fs.chmod), and throws on sizes past 2^53. Modes above
 *    0o7777 and times with nanoseconds >= 1e9 are NFS3ERR_INVAL, sizes past MAX_FILE_BYTES
 *    NFS3ERR_FBIG.
 */
import fs from 'node:fs';
import { Nfs3Stat, NfsError } from '../error-map.js';
import type { AuthSys } from '../rpc/auth.js';
import type { SetAttrs } from './file-ops.js';

/** On-disk owner of every file and directory an NFS client creates ("nobody"). */
export const SERVICE_UID = 65534;
/** On-disk group of every file and directory an NFS client creates ("nogroup"). */
export const SERVICE_GID = 65534;
/** Bits a regular file may have on disk: read and write only. */
export const FILE_MODE_MASK = 0o666;
/** Bits a directory may have on disk: permission bits only (no set-id, no sticky). */
export const DIR_MODE_MASK = 0o777;
/** Largest file size a client may ask for (Node's file APIs take safe integers). */
export const MAX_FILE_BYTES = BigInt(Number.MAX_SAFE_INTEGER);

/** Throws NFS3ERR_INVAL / NFS3ERR_FBIG for values that must never reach the file system. */
export function checkSetAttrs(a: SetAttrs): void {
  if (a.mode !== undefined && (!Number.isInteger(a.mode) || a.mode < 0 || a.mode > 0o7777)) {
    throw new NfsError(Nfs3Stat.INVAL, `invalid mode 0o${a.mode.toString(8)}`);
  }
  for (const id of [a.uid, a.gid]) {
    if (id !== undefined && (!Number.isInteger(id) || id < 0 || id > 0xffffffff)) throw new NfsError(Nfs3Stat.INVAL, `invalid owner ${id}`);
  }
  if (a.size !== undefined && (a.size < 0n || a.size > MAX_FILE_BYTES)) throw new NfsError(Nfs3Stat.FBIG, `size ${a.size} too large`);
  for (const t of [a.atime, a.mtime]) {
    if (t && t !== 'server' && (!Number.isInteger(t.sec) || t.sec < 0 || !Number.isInteger(t.nsec) || t.nsec < 0 || t.nsec >= 1e9)) {
      throw new NfsError(Nfs3Stat.INVAL, 'invalid time');
    }
  }
}

/** The mode applied on disk for a client's (checked) mode. */
export function diskMode(mode: number, dir: boolean): number {
  return mode & (dir ? DIR_MODE_MASK : FILE_MODE_MASK);
}

/**
 * knfsd's rule for SETATTR uid/gid: root may change both; anyone else may only "set" the current
 * owner and group (NFS3ERR_PERM otherwise). The change is never applied on disk.
 */
export function checkOwnerChange(a: SetAttrs, caller: AuthSys | undefined, current: { uid: number; gid: number }): void {
  if (a.uid === undefined && a.gid === undefined) return;
  if (caller?.uid === 0) return;
  if ((a.uid !== undefined && a.uid !== current.uid) || (a.gid !== undefined && a.gid !== current.gid)) {
    throw new NfsError(Nfs3Stat.PERM, 'only root may change the owner or group');
  }
}

/** Gives a file or directory a client created to the service ids (when the daemon can: as root). */
export async function giveToService(p: string): Promise<void> {
  if (process.getuid?.() !== 0) return; // an unprivileged daemon's files are already unprivileged
  await fs.promises.lchown(p, SERVICE_UID, SERVICE_GID);
}
