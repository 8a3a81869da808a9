/**
 * Data and attribute changes of datastore files: READ, WRITE, COMMIT and SETATTR on flat disks
 * (the session's BlockDevice), restore-point files (read-only) and real files.
 *
 * Design notes:
 *  - Flat disks are catalog entries, opened on first use (each through its own checked() gate, the
 *    one place that validates I/O) and kept open until the catalog removes them or the server
 *    closes. WRITE goes to the session disk; UNSTABLE writes are answered
 *    UNSTABLE and made stable by COMMIT (device.flush()); DATA_SYNC and FILE_SYNC writes are written
 *    with FUA (or write + flush when the device has no FUA) and answered FILE_SYNC. The write
 *    verifier is taken from the daemon's start time, so a client that wrote UNSTABLE before a
 *    restart sees a new verifier at COMMIT and sends its data again.
 *  - Real files: pwrite into the page cache; COMMIT and stable writes fsync. Directory changes are
 *    fsynced in mutations.ts.
 *  - SETATTR of real files: values are validated before they reach fs.* and the on-disk owner
 *    and modes follow ownership.ts (service uid/gid, no execute or set-id bits on regular files).
 *  - NFS semantics on top of the gate: reads are clipped at the end of the disk (by the caller),
 *    writes past it fail with NFS3ERR_FBIG, and unaligned reads go through readAt().
 */
import fs from 'node:fs';
import type { CheckedDevice } from '../../blockdev/checked.js';
import type { CatalogEntry } from '../../exports/catalog.js';
import { readAt } from '../../exports/read-at.js';
import { errorText } from '../../errors.js';
import { fdatasync, pread, pwrite } from '../../util/file-io.js';
import type { Logger } from '../../util/log.js';
import { Nfs3Stat, NfsError } from '../error-map.js';
import type { Datastore } from './datastore.js';
import { flatSize, type DsNode } from './nodes.js';
import { checkSetAttrs, diskMode } from './ownership.js';

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
  readonly #devices = new Map<CatalogEntry, Promise<CheckedDevice>>();
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
      case 'point-flat': {
        // A VHD's footer follows the disk's bytes (the caller clipped the range to both).
        const inDisk = Math.max(0, Math.min(dst.length, k.disk.size - offset));
        if (inDisk > 0) await readAt(await this.#device(k.disk), dst.subarray(0, inDisk), offset);
        if (inDisk < dst.length && k.k === 'flat' && k.footer) k.footer.copy(dst, inDisk, offset + inDisk - k.disk.size);
        return dst.length;
      }
      case 'point-desc':
        return k.text.copy(dst, 0, offset, offset + dst.length);
      case 'point-config':
        return (await k.p.info.readConfig(k.name)).copy(dst, 0, offset, offset + dst.length);
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
      const dev = await this.#device(k.disk);
      if (offset + data.length > flatSize(k)) throw new NfsError(Nfs3Stat.FBIG, 'write past the end of the disk');
      if (k.footer && offset + data.length > dev.size) {
        // The VHD footer is derived from the disk: rewriting it unchanged is fine, changing it is not.
        const from = Math.max(offset, dev.size);
        if (!Buffer.from(data.subarray(from - offset)).equals(k.footer.subarray(from - dev.size, offset + data.length - dev.size))) {
          throw new NfsError(Nfs3Stat.ACCES, `the VHD footer of ${n.name} is fixed (a fixed disk of ${dev.size} bytes)`);
        }
        data = data.subarray(0, Math.max(0, dev.size - offset));
        if (data.length === 0) return stable === StableHow.UNSTABLE ? StableHow.UNSTABLE : StableHow.FILE_SYNC;
      }
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
    if (k.k === 'flat') return (await this.#device(k.disk)).flush();
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

  /**
   * Checks every value first (ownership.ts); uid/gid are never applied on disk (the caller checked
   * who may ask), modes only with permission bits (no execute bits on regular files).
   */
  async setattr(n: DsNode, a: SetAttrs): Promise<void> {
    checkSetAttrs(a);
    const k = n.kind;
    if (k.k === 'flat') {
      // The disk's size is fixed; other attributes of a virtual file are accepted and dropped.
      if (a.size !== undefined && a.size !== BigInt(flatSize(k))) {
        throw new NfsError(Nfs3Stat.INVAL, `the size of ${n.name} is fixed at ${flatSize(k)} bytes`);
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
    if (a.mode !== undefined) await fs.promises.chmod(k.path, diskMode(a.mode, k.dir));
    if (a.atime || a.mtime) {
      const st = await fs.promises.lstat(k.path);
      const t = (v: SetAttrs['atime'], cur: Date): Date =>
        v === undefined ? cur : v === 'server' ? new Date() : new Date(v.sec * 1000 + Math.floor(v.nsec / 1e6));
      await fs.promises.utimes(k.path, t(a.atime, st.atime), t(a.mtime, st.mtime));
    }
  }

  /** Closes this server's handle of a disk the catalog removed. */
  async release(entry: CatalogEntry): Promise<void> {
    const p = this.#devices.get(entry);
    if (!p) return;
    this.#devices.delete(entry);
    await p.then((dev) => dev.close()).catch((err: unknown) => this.#log.debug('closing a published disk failed', { export: entry.name, err: errorText(err) }));
  }

  /** Closes every handle (server shutdown). */
  async close(): Promise<void> {
    await Promise.all([...this.#devices.keys()].map((e) => this.release(e)));
  }

  /** The server's handle of a published disk, opened on first use. */
  #device(entry: CatalogEntry): Promise<CheckedDevice> {
    let p = this.#devices.get(entry);
    if (!p) {
      p = entry.open({ onUnexpectedError: (err, op) => this.#log.error('unexpected device error', { export: entry.name, op, err: errorText(err) }) });
      this.#devices.set(entry, p);
      p.catch(() => this.#devices.delete(entry));
    }
    return p;
  }
}

function isVirtualDir(n: DsNode): boolean {
  return ['root', 'sessions', 'backups', 'xen', 'session', 'vm', 'point'].includes(n.kind.k);
}
