/**
 * Data and attribute changes of datastore files: READ, WRITE, COMMIT and SETATTR on flat disks
 * (the session's BlockDevice), restore-point files (read-only) and real files.
 *
 * Design notes:
 *  - Flat disks: WRITE goes to SessionDiskView.device().write(); UNSTABLE writes are answered
 *    UNSTABLE and made stable by COMMIT (device.flush()); DATA_SYNC and FILE_SYNC writes are written
 *    with FUA (or write + flush when the device has no FUA) and answered FILE_SYNC. The write
 *    verifier is taken from the daemon's start time, so a client that wrote UNSTABLE before a
 *    restart sees a new verifier at COMMIT and sends its data again.
 *  - Real files: pwrite into the page cache; COMMIT and stable writes fsync. Directory changes are
 *    fsynced in mutations.ts.
 *  - Requests are range-checked here (front ends do not reach devices through checked()): reads
 *    are clipped at the end of the disk, writes past it fail with NFS3ERR_FBIG, and devices with
 *    a minimum block size > 1 get aligned bounce reads.
 *  - Restore-point disks are opened on first read and kept open until the point disappears or the
 *    server closes.
 */
import fs from 'node:fs';
import type { BlockDevice } from '../../blockdev/types.js';
import { fdatasync, pread, pwrite } from '../../util/file-io.js';
import type { Logger } from '../../util/log.js';
import { Nfs3Stat, NfsError } from '../error-map.js';
import type { Datastore } from './datastore.js';
import type { DsNode } from './nodes.js';

export const StableHow = { UNSTABLE: 0, DATA_SYNC: 1, FILE_SYNC: 2 } as const;

export interface SetAttrs {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: bigint;
  /** 'server' = set to the server's time. */
  atime?: { sec: number; nsec: number } | 'server';
  mtime?: { sec: number; nsec: number } | 'server';
}

export class FileOps {
  readonly #ds: Datastore;
  readonly #log: Logger;
  readonly #pointDevices = new Map<string, Promise<BlockDevice>>();
  /** 8 bytes, changes with every daemon start (RFC 1813 §3.3.7 writeverf3). */
  readonly verifier: Buffer;

  constructor(ds: Datastore, log: Logger, startedAt = Date.now()) {
    this.#ds = ds;
    this.#log = log;
    this.verifier = Buffer.alloc(8);
    this.verifier.writeBigUInt64BE(BigInt(startedAt) * 1000n + BigInt(process.pid % 1000));
  }

  /** Fills `dst` from `offset` (the caller clipped the range to the file's size). Returns bytes read. */
  async read(n: DsNode, dst: Uint8Array, offset: number): Promise<number> {
    const k = n.kind;
    switch (k.k) {
      case 'flat':
        await readDevice(k.disk.device(), dst, offset);
        return dst.length;
      case 'point-flat':
        await readDevice(await this.#pointDevice(k.p.vm, k.p.id, k.disk.name, () => k.disk.open()), dst, offset);
        return dst.length;
      case 'point-desc':
        return k.text.copy(dst, 0, offset, offset + dst.length);
      case 'point-config':
        return (await k.p.readConfig(k.name)).copy(dst, 0, offset, offset + dst.length);
      case 'real': {
        const fh = await fs.promises.open(k.path, 'r');
        try {
          return await pread(fh.fd, dst, offset);
        } finally {
          await fh.close();
        }
      }
      default:
        throw new NfsError(Nfs3Stat.ISDIR, 'is a directory');
    }
  }

  /** Writes; resolves with the stability the reply may claim. */
  async write(n: DsNode, data: Uint8Array, offset: number, stable: number): Promise<number> {
    const k = n.kind;
    if (k.k === 'flat') {
      const dev = k.disk.device();
      if (offset + data.length > dev.size) throw new NfsError(Nfs3Stat.FBIG, 'write past the end of the disk');
      if (stable === StableHow.UNSTABLE) await dev.write(data, offset);
      else if (dev.capabilities().canFua) await dev.write(data, offset, { fua: true });
      else {
        await dev.write(data, offset);
        await dev.flush();
      }
      this.#ds.touched(n);
      return stable === StableHow.UNSTABLE ? StableHow.UNSTABLE : StableHow.FILE_SYNC;
    }
    if (k.k !== 'real') throw new NfsError(isVirtualDir(n) ? Nfs3Stat.ISDIR : Nfs3Stat.ROFS, 'not writable');
    if (k.dir) throw new NfsError(Nfs3Stat.ISDIR, 'is a directory');
    const fh = await fs.promises.open(k.path, 'r+');
    try {
      await pwrite(fh.fd, data, offset);
      if (stable !== StableHow.UNSTABLE) await (stable === StableHow.FILE_SYNC ? fh.sync() : fdatasync(fh.fd));
    } finally {
      await fh.close();
    }
    return stable === StableHow.UNSTABLE ? StableHow.UNSTABLE : StableHow.FILE_SYNC;
  }

  async commit(n: DsNode): Promise<void> {
    const k = n.kind;
    if (k.k === 'flat') return k.disk.device().flush();
    if (k.k === 'real' && !k.dir) {
      const fh = await fs.promises.open(k.path, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    // Everything else holds nothing unstable.
  }

  async setattr(n: DsNode, a: SetAttrs): Promise<void> {
    const k = n.kind;
    if (k.k === 'flat') {
      // The disk's size is fixed; other attributes of a virtual file are accepted and dropped.
      if (a.size !== undefined && a.size !== BigInt(k.disk.size)) {
        throw new NfsError(Nfs3Stat.INVAL, `the size of ${n.name} is fixed at ${k.disk.size} bytes`);
      }
      if (a.mtime) this.#ds.touched(n);
      return;
    }
    if (k.k === 'session') return; // the folder itself: nothing to change
    if (k.k !== 'real') throw new NfsError(Nfs3Stat.ROFS, 'read-only object');
    if (a.size !== undefined) {
      if (k.dir) throw new NfsError(Nfs3Stat.ISDIR, 'cannot set the size of a directory');
      await fs.promises.truncate(k.path, Number(a.size));
    }
    if (a.mode !== undefined) await fs.promises.chmod(k.path, a.mode & 0o7777);
    if (a.uid !== undefined || a.gid !== undefined) await fs.promises.lchown(k.path, a.uid ?? -1, a.gid ?? -1);
    if (a.atime || a.mtime) {
      const st = await fs.promises.lstat(k.path);
      const t = (v: SetAttrs['atime'], cur: Date): Date =>
        v === undefined ? cur : v === 'server' ? new Date() : new Date(v.sec * 1000 + Math.floor(v.nsec / 1e6));
      await fs.promises.utimes(k.path, t(a.atime, st.atime), t(a.mtime, st.mtime));
    }
  }

  /** Closes restore-point devices of points that are gone (or all). */
  async closeDevices(keep: (key: string) => boolean = () => false): Promise<void> {
    for (const [key, p] of this.#pointDevices) {
      if (keep(key)) continue;
      this.#pointDevices.delete(key);
      try {
        await (await p).close();
      } catch (err) {
        this.#log.debug('closing a restore-point disk failed', { key, err: (err as Error).message });
      }
    }
  }

  #pointDevice(vm: string, id: string, disk: string, open: () => Promise<BlockDevice>): Promise<BlockDevice> {
    const key = `${vm}@${id}/${disk}`;
    let p = this.#pointDevices.get(key);
    if (!p) {
      p = open();
      this.#pointDevices.set(key, p);
      p.catch(() => this.#pointDevices.delete(key));
    }
    return p;
  }
}

function isVirtualDir(n: DsNode): boolean {
  return ['root', 'sessions', 'backups', 'session', 'vm', 'point'].includes(n.kind.k);
}

/** Reads exactly dst.length bytes at offset, with an aligned bounce buffer when the device needs one. */
async function readDevice(dev: BlockDevice, dst: Uint8Array, offset: number): Promise<void> {
  if (dst.length === 0) return;
  const min = dev.capabilities().blockSize.min;
  if (min <= 1 || (offset % min === 0 && dst.length % min === 0)) return dev.read(dst, offset);
  const start = offset - (offset % min);
  const end = Math.min(dev.size, Math.ceil((offset + dst.length) / min) * min);
  const bounce = Buffer.allocUnsafe(end - start);
  await dev.read(bounce, start);
  bounce.copy(dst, 0, offset - start, offset - start + dst.length);
}
