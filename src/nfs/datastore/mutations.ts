/**
 * Namespace changes in session folders: CREATE (UNCHECKED, GUARDED, EXCLUSIVE), MKDIR, REMOVE,
 * RMDIR, RENAME. They act on the real files under `<session.dir>/nfs/`; the flat disks cannot be
 * created, removed or renamed over (NFS3ERR_ACCES), and nothing outside a session folder changes
 * (NFS3ERR_ROFS). Each change fsyncs the directories it touched before it is answered, so a file
 * the client was told exists survives a crash of the daemon.
 *
 * Ownership and modes (ownership.ts): every sattr3 value is checked before it reaches fs.* (a mode
 * above 0o7777 is NFS3ERR_INVAL, never an abort of the daemon); what a client creates is owned on
 * disk by SERVICE_UID:SERVICE_GID whatever uid it claims, regular files are created with at most
 * rw-rw-rw- and directories with at most rwxrwxrwx; uid/gid in CREATE and MKDIR are ignored.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { SessionGroup } from '../../exports/catalog.js';
import { Nfs3Stat, NfsError } from '../error-map.js';
import type { Datastore } from './datastore.js';
import type { FileOps, SetAttrs } from './file-ops.js';
import type { DsNode } from './nodes.js';
import { checkSetAttrs, diskMode, giveToService } from './ownership.js';

export const CreateMode = { UNCHECKED: 0, GUARDED: 1, EXCLUSIVE: 2 } as const;

interface Target {
  s: SessionGroup;
  dirPath: string;
}

export class Mutations {
  readonly #ds: Datastore;
  readonly #ops: FileOps;

  constructor(ds: Datastore, ops: FileOps) {
    this.#ds = ds;
    this.#ops = ops;
  }

  async create(dir: DsNode, name: string, mode: number, given: SetAttrs, verf?: Uint8Array): Promise<DsNode> {
    checkSetAttrs(given);
    const attrs: SetAttrs = { ...given, uid: undefined, gid: undefined };
    const fileMode = diskMode(attrs.mode ?? 0o644, false);
    const t = await this.#target(dir, name);
    const existing = await this.#existing(dir, name);
    if (existing && existing.kind.k === 'flat') {
      if (mode !== CreateMode.UNCHECKED) throw new NfsError(Nfs3Stat.EXIST, `${name} exists`);
      await this.#ops.setattr(existing, { size: attrs.size });
      return existing;
    }
    if (existing && existing.kind.k === 'real' && existing.kind.dir) throw new NfsError(Nfs3Stat.ISDIR, `${name} is a directory`);
    const p = path.join(t.dirPath, name);
    if (mode === CreateMode.UNCHECKED) {
      // Exclusive first, so only a file made here is given to the service ids.
      const fh = await fs.promises.open(p, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_RDWR, fileMode).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
        return undefined;
      });
      if (fh) {
        await fh.close();
        await giveToService(p);
      }
    } else {
      try {
        const fh = await fs.promises.open(p, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_RDWR, fileMode);
        await fh.close();
        await giveToService(p);
        if (mode === CreateMode.EXCLUSIVE && verf) {
          // The verifier is kept in atime/mtime (as Linux does) until the client's SETATTR.
          const v = Buffer.from(verf);
          await fs.promises.utimes(p, v.readUInt32BE(0), v.readUInt32BE(4));
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        if (mode === CreateMode.EXCLUSIVE && verf && (await sameVerifier(p, verf))) return this.#ds.realNode(dir, t.s, name, p);
        throw new NfsError(Nfs3Stat.EXIST, `${name} exists`);
      }
    }
    const n = await this.#ds.realNode(dir, t.s, name, p);
    if (mode !== CreateMode.EXCLUSIVE) {
      const rest: SetAttrs = { ...attrs, mode: undefined };
      if (Object.values(rest).some((v) => v !== undefined)) await this.#ops.setattr(n, rest);
    }
    await syncDir(t.dirPath);
    return n;
  }

  async mkdir(dir: DsNode, name: string, attrs: SetAttrs): Promise<DsNode> {
    checkSetAttrs(attrs);
    const t = await this.#target(dir, name);
    if (await this.#existing(dir, name)) throw new NfsError(Nfs3Stat.EXIST, `${name} exists`);
    const p = path.join(t.dirPath, name);
    await fs.promises.mkdir(p, { mode: diskMode(attrs.mode ?? 0o755, true) });
    await giveToService(p);
    await syncDir(t.dirPath);
    return this.#ds.realNode(dir, t.s, name, p);
  }

  async remove(dir: DsNode, name: string, rmdir: boolean): Promise<void> {
    const t = await this.#target(dir, name);
    const n = await this.#ds.lookup(dir, name);
    if (n.kind.k !== 'real') throw new NfsError(Nfs3Stat.ACCES, `${name} belongs to the recovery session and cannot be removed`);
    if (rmdir && !n.kind.dir) throw new NfsError(Nfs3Stat.NOTDIR, `${name} is not a directory`);
    if (!rmdir && n.kind.dir) throw new NfsError(Nfs3Stat.ISDIR, `${name} is a directory`);
    const p = n.kind.path;
    if (rmdir) await fs.promises.rmdir(p);
    else await fs.promises.unlink(p);
    this.#ds.forgetPath(p);
    await syncDir(t.dirPath);
  }

  async rename(fromDir: DsNode, fromName: string, toDir: DsNode, toName: string): Promise<void> {
    const from = await this.#target(fromDir, fromName);
    const to = await this.#target(toDir, toName);
    if (from.s.info.name !== to.s.info.name) throw new NfsError(Nfs3Stat.XDEV, 'cannot move files between sessions');
    const src = await this.#ds.lookup(fromDir, fromName);
    if (src.kind.k !== 'real') throw new NfsError(Nfs3Stat.ACCES, `${fromName} belongs to the recovery session and cannot be renamed`);
    const dst = await this.#existing(toDir, toName);
    if (dst && dst.kind.k !== 'real') throw new NfsError(Nfs3Stat.ACCES, `${toName} belongs to the recovery session and cannot be replaced`);
    const p = path.join(to.dirPath, toName);
    if (src.kind.path === p) return;
    await fs.promises.rename(src.kind.path, p);
    this.#ds.forgetPath(src.kind.path);
    if (dst) this.#ds.forgetPath(p);
    await syncDir(from.dirPath);
    if (to.dirPath !== from.dirPath) await syncDir(to.dirPath);
  }

  async #target(dir: DsNode, name: string): Promise<Target> {
    checkName(name);
    const k = dir.kind;
    if (k.k === 'session') {
      await this.#ds.ensureSessionDir(k.s, k.layout);
      return { s: k.s, dirPath: k.realDir };
    }
    if (k.k === 'real') {
      if (!k.dir) throw new NfsError(Nfs3Stat.NOTDIR, 'not a directory');
      return { s: k.s, dirPath: k.path };
    }
    if (k.k === 'flat' || k.k === 'point-flat' || k.k === 'point-desc' || k.k === 'point-config') {
      throw new NfsError(Nfs3Stat.NOTDIR, 'not a directory');
    }
    throw new NfsError(Nfs3Stat.ROFS, 'only session folders can be changed');
  }

  async #existing(dir: DsNode, name: string): Promise<DsNode | undefined> {
    try {
      return await this.#ds.lookup(dir, name);
    } catch (err) {
      if (err instanceof NfsError && err.stat === Nfs3Stat.NOENT) return undefined;
      throw err;
    }
  }
}

export function checkName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new NfsError(Nfs3Stat.INVAL, `invalid file name '${name}'`);
  }
  if (Buffer.byteLength(name) > 255) throw new NfsError(Nfs3Stat.NAMETOOLONG, 'file name longer than 255 bytes');
}

async function sameVerifier(p: string, verf: Uint8Array): Promise<boolean> {
  const st = await fs.promises.stat(p);
  const v = Buffer.from(verf);
  return Math.floor(st.atimeMs / 1000) === v.readUInt32BE(0) && Math.floor(st.mtimeMs / 1000) === v.readUInt32BE(4);
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fs.promises.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
