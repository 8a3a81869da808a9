/**
 * Datastore: the file tree the NFS server publishes, rendered from the publication catalog's NFS
 * view (src/exports/catalog.ts) and nothing else.
 *
 *   /sessions/<session>/<disk>-flat.vmdk   the session's published disk (writable)
 *   /sessions/<session>/<anything else>    ordinary files under <filesDir>/nfs/: the descriptor
 *                                          <disk>.vmdk and the VM's config files (copied there when
 *                                          the folder is first used) and whatever the hypervisor
 *                                          creates (.lck-*, vmware.log, .vswp, .nvram, snapshots)
 *   /backups/<vm>/<point>/                 restore points, read-only: <disk>-flat.vmdk, <disk>.vmdk,
 *                                          config files
 *   /xen/<SR-UUID>/<VDI-UUID>.raw          the same session disks as a XenServer storage repository
 *                                          (xen-names.ts; `.vhd` with a fixed-VHD footer instead when
 *                                          the format is vhd), merged with ordinary files under
 *                                          <filesDir>/xen/ (what the storage manager creates)
 *
 * Design notes:
 *  - Nodes are found through `#index` (file id -> node), filled by every lookup and listing. A
 *    handle whose id is not there (after a restart) makes the datastore walk the whole tree once
 *    and look again; a handle still not found is NFS3ERR_STALE (handles.ts explains the ids).
 *  - Every resolve re-checks that the object still exists: the session is still published on
 *    NFS, the restore point still listed, a real file still has the same inode and
 *    birth time. Objects of removed sessions therefore answer STALE at once.
 *  - LOOKUP goes by name: in a session folder the flat disks come from memory and a real file costs
 *    one lstat of that name; only READDIR(PLUS) and the walk list a folder (which lstats each entry).
 *  - Attributes of virtual objects come from memory (no I/O): GETATTR of the root or a disk is
 *    answered even while the thread pool is busy with slow backup reads.
 *  - Left out: hard links, symlinks and device nodes (NOTSUPP); sizes of flat disks are fixed.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CatalogEntry, CatalogView, PointGroup, SessionGroup } from '../../exports/catalog.js';
import type { Logger } from '../../util/log.js';
import { Nfs3Stat, NfsError } from '../error-map.js';
import type { HandleCodec } from './handles.js';
import { flatSize, isDir, msToNs, type DsNode, type Layout, type NodeAttrs, type NodeKind } from './nodes.js';
import { vhdFooter } from './vhd-footer.js';
import { descriptorName, flatName, vmdkDescriptor } from './vmdk.js';
import { XEN_DIR, xenSrUuid, xenVdiFile, xenVdiUuid, type XenFormat } from '../xen-names.js';

export interface DatastoreOptions {
  /** The catalog as published on NFS. */
  catalog: CatalogView;
  codec: HandleCodec;
  log: Logger;
  /** How /xen renders session disks: `<VDI>.raw`, `<VDI>.vhd` (fixed VHD), or no /xen. Default raw. */
  xenFormat?: XenFormat;
}

const startNs = msToNs(Date.now());

export class Datastore {
  readonly codec: HandleCodec;
  readonly #catalog: CatalogView;
  readonly #log: Logger;
  readonly #index = new Map<bigint, DsNode>();
  readonly #mtimes = new Map<bigint, bigint>();
  readonly #ready = new Map<string, Promise<void>>();
  /** The index holds everything since the last walk (nothing changed since): unknown ids are STALE. */
  #complete = false;
  #lastWalk = 0;
  #walking: Promise<void> | undefined;
  #sessionsChangedNs = startNs;
  #pointsChangedNs = startNs;
  readonly #unsubscribe: Array<() => void> = [];
  readonly root: DsNode;
  readonly #sessionsDir: DsNode;
  readonly #backupsDir: DsNode;
  readonly #xenDir: DsNode | undefined;
  readonly #xenFormat: XenFormat;

  constructor(opts: DatastoreOptions) {
    this.codec = opts.codec;
    this.#catalog = opts.catalog;
    this.#log = opts.log;
    this.root = this.#node('root', '', undefined, { k: 'root' });
    this.#sessionsDir = this.#node('sessions', 'sessions', this.root, { k: 'sessions' });
    this.#backupsDir = this.#node('backups', 'backups', this.root, { k: 'backups' });
    this.#xenFormat = opts.xenFormat ?? 'raw';
    if (this.#xenFormat !== 'off') this.#xenDir = this.#node('xen', XEN_DIR, this.root, { k: 'xen' });
    this.#unsubscribe.push(
      this.#catalog.onChange((e, what) => {
        if (what === 'changed') return;
        this.#complete = false;
        if (e.kind === 'session') this.#sessionsChangedNs = msToNs(Date.now());
        else if (e.kind === 'point') this.#pointsChangedNs = msToNs(Date.now());
      }),
    );
  }

  close(): void {
    for (const u of this.#unsubscribe.splice(0)) u();
  }

  handle(n: DsNode): Buffer {
    return this.codec.encode({ fileid: n.id, gen: n.gen });
  }

  /** File handle -> node, or NFS3ERR_BADHANDLE / NFS3ERR_STALE. */
  async resolve(fh: Uint8Array): Promise<DsNode> {
    const f = this.codec.decode(fh);
    if (f === 'bad') throw new NfsError(Nfs3Stat.BADHANDLE, 'not a file handle of this server');
    if (f === 'foreign') throw new NfsError(Nfs3Stat.STALE, 'file handle of another datastore');
    const known = this.#index.get(f.fileid);
    let n = known && (await this.#current(known));
    if (!n) {
      if (known) this.#index.delete(f.fileid);
      await this.#rebuildIfUseful();
      const again = this.#index.get(f.fileid);
      n = again && (await this.#current(again));
    }
    if (!n || n.gen !== f.gen) throw new NfsError(Nfs3Stat.STALE, 'the object of this handle no longer exists');
    return n;
  }

  /** The directory `dir`'s entry `name` ('.' and '..' included). */
  async lookup(dir: DsNode, name: string): Promise<DsNode> {
    if (!isDir(dir)) throw new NfsError(Nfs3Stat.NOTDIR, 'not a directory');
    if (name === '.' || name === '') return dir;
    if (name === '..') return this.#index.get(dir.parentId) ?? this.root;
    const k = dir.kind;
    if (k.k === 'session' || k.k === 'real') return this.#lookupReal(dir, name);
    const found = (await this.list(dir)).find((e) => e.name === name);
    if (!found) throw new NfsError(Nfs3Stat.NOENT, `no such entry '${name}'`);
    return found;
  }

  /** Resolves an absolute path (MOUNT's dirpath). */
  async walk(p: string): Promise<DsNode> {
    let n = this.root;
    for (const part of p.split('/').filter((x) => x && x !== '.')) n = await this.lookup(n, part);
    return n;
  }

  parent(n: DsNode): DsNode {
    return this.#index.get(n.parentId) ?? this.root;
  }

  /** Entries of a directory, sorted by name (cookies index into this order). */
  async list(dir: DsNode): Promise<DsNode[]> {
    const k = dir.kind;
    switch (k.k) {
      case 'root':
        return this.#xenDir ? [this.#backupsDir, this.#sessionsDir, this.#xenDir] : [this.#backupsDir, this.#sessionsDir];
      case 'sessions':
        return this.#catalog.sessions().map((s) => this.#sessionNode(s, 'vmware'));
      case 'xen':
        return this.#catalog.sessions().map((s) => this.#sessionNode(s, 'xen')).sort(byName);
      case 'session': {
        await this.ensureSessionDir(k.s, k.layout);
        const flats = k.s.disks.map((d) => this.#flatNode(dir, k.s, d, k.layout));
        const real = await this.#listReal(dir, k.s, k.realDir);
        const taken = new Set(flats.map((f) => f.name));
        return [...flats, ...real.filter((r) => !taken.has(r.name))].sort(byName);
      }
      case 'real':
        if (!k.dir) throw new NfsError(Nfs3Stat.NOTDIR, 'not a directory');
        return (await this.#listReal(dir, k.s, k.path)).sort(byName);
      case 'backups': {
        return this.#catalog.vms().map((v) => this.#node(`vm:${v.vm}`, v.vm, dir, { k: 'vm', vm: v.vm }));
      }
      case 'vm':
        return (this.#catalog.vms().find((v) => v.vm === k.vm)?.points ?? []).map((p) => this.#pointNode(dir, p));
      case 'point': {
        const p = k.p;
        const key = `${p.info.vm}:${p.info.id}`;
        const out: DsNode[] = [];
        for (const d of p.disks) {
          out.push(this.#node(`pflat:${key}:${d.disk}`, flatName(d.disk), dir, { k: 'point-flat', p, disk: d }));
          const text = Buffer.from(vmdkDescriptor(d.disk, d.size, `${key}:${d.disk}`));
          out.push(this.#node(`pdesc:${key}:${d.disk}`, descriptorName(d.disk), dir, { k: 'point-desc', p, disk: d, text }));
        }
        for (const c of p.info.configs) out.push(this.#node(`pconf:${key}:${c}`, c, dir, { k: 'point-config', p, name: c }));
        return out.sort(byName);
      }
      default:
        throw new NfsError(Nfs3Stat.NOTDIR, 'not a directory');
    }
  }

  /** Attributes; virtual objects need no I/O. */
  async attrs(n: DsNode): Promise<NodeAttrs> {
    const k = n.kind;
    const dir = (mtimeNs: bigint, writable: boolean): NodeAttrs => ({
      dir: true, mode: writable ? 0o755 : 0o555, nlink: 2, uid: 0, gid: 0, size: 4096n, used: 4096n, fileid: n.id,
      atimeNs: mtimeNs, mtimeNs, ctimeNs: mtimeNs,
    });
    const file = (size: number, mtimeNs: bigint, writable: boolean): NodeAttrs => ({
      dir: false, mode: writable ? 0o644 : 0o444, nlink: 1, uid: 0, gid: 0, size: BigInt(size), used: BigInt(size), fileid: n.id,
      atimeNs: mtimeNs, mtimeNs, ctimeNs: mtimeNs,
    });
    switch (k.k) {
      case 'root':
        return dir(startNs, false);
      case 'sessions':
      case 'xen':
        return dir(this.#sessionsChangedNs, false);
      case 'backups':
      case 'vm':
        return dir(this.#pointsChangedNs, false);
      case 'point':
        return dir(msToNs(k.p.info.createdAt.getTime()), false);
      case 'point-flat':
        return file(k.disk.size, msToNs(k.p.info.createdAt.getTime()), false);
      case 'point-desc':
        return file(k.text.length, msToNs(k.p.info.createdAt.getTime()), false);
      case 'point-config':
        return file((await k.p.info.readConfig(k.name)).length, msToNs(k.p.info.createdAt.getTime()), false);
      case 'flat':
        return file(flatSize(k), this.#mtimes.get(n.id) ?? msToNs(k.s.info.createdAt.getTime()), true);
      case 'session': {
        const base = dir(msToNs(k.s.info.createdAt.getTime()), true);
        try {
          const st = await fs.promises.stat(k.realDir, { bigint: true });
          return { ...base, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, atimeNs: st.atimeNs };
        } catch {
          return base;
        }
      }
      case 'real': {
        const st = await fs.promises.lstat(k.path, { bigint: true });
        return {
          dir: st.isDirectory(), mode: Number(st.mode & 0o7777n), nlink: Number(st.nlink), uid: Number(st.uid), gid: Number(st.gid),
          size: st.size, used: st.blocks * 512n, fileid: n.id, atimeNs: st.atimeNs, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs,
        };
      }
    }
  }

  /** A flat disk was written: its mtime moves (clients use it to drop cached pages). */
  touched(n: DsNode): void {
    this.#mtimes.set(n.id, msToNs(Date.now()));
  }

  /**
   * Makes `<filesDir>/nfs/` with descriptors and config files (layout vmware), or an empty
   * `<filesDir>/xen/` (layout xen), once per session and layout (atomic rename).
   */
  ensureSessionDir(s: SessionGroup, layout: Layout = 'vmware'): Promise<void> {
    const key = `${layout}:${sessionKey(s)}`;
    let p = this.#ready.get(key);
    if (!p) {
      p = layout === 'xen' ? this.#prepareSrDir(s) : this.#prepareSessionDir(s);
      this.#ready.set(key, p);
      p.catch(() => this.#ready.delete(key));
    }
    return p;
  }

  /** A real file's node after it was created or renamed (by path). */
  async realNode(parent: DsNode, s: SessionGroup, name: string, p: string): Promise<DsNode> {
    const st = await fs.promises.lstat(p, { bigint: true });
    // Only files and directories: a symlink or device node put there by hand is not published.
    if (!st.isFile() && !st.isDirectory()) throw new NfsError(Nfs3Stat.NOENT, `${name} is not a regular file`);
    return this.#node(`real:${sessionKey(s)}:${st.ino}`, name, parent, { k: 'real', s, path: p, dir: st.isDirectory() }, st.birthtimeNs);
  }

  /** Forgets real nodes at or under `p` (after a rename or remove; they are found again by walking). */
  forgetPath(p: string): void {
    this.#complete = false;
    for (const [id, n] of this.#index) {
      if (n.kind.k === 'real' && (n.kind.path === p || n.kind.path.startsWith(p + path.sep))) this.#index.delete(id);
    }
  }

  // ---- internals -------------------------------------------------------------------------

  #node(identity: string, name: string, parent: DsNode | undefined, kind: NodeKind, gen = 0n): DsNode {
    const id = this.codec.fileid(identity);
    const n: DsNode = { id, gen, name, parentId: parent?.id ?? id, kind };
    this.#index.set(id, n);
    return n;
  }

  #sessionNode(s: SessionGroup, layout: Layout): DsNode {
    if (layout === 'xen') {
      return this.#node(`sr:${sessionKey(s)}`, xenSrUuid(s.info.name, s.info.createdAt), this.#xenDir, { k: 'session', s, realDir: path.join(s.info.filesDir, XEN_DIR), layout });
    }
    return this.#node(`session:${sessionKey(s)}`, s.info.name, this.#sessionsDir, { k: 'session', s, realDir: path.join(s.info.filesDir, 'nfs'), layout });
  }

  /** A session disk's file in a session folder (vmware) or SR folder (xen). */
  #flatNode(dir: DsNode, s: SessionGroup, d: CatalogEntry, layout: Layout): DsNode {
    if (layout === 'vmware') return this.#node(`flat:${sessionKey(s)}:${d.disk}`, flatName(d.disk), dir, { k: 'flat', s, disk: d, layout });
    const format = this.#xenFormat === 'vhd' ? 'vhd' : 'raw';
    const name = xenVdiFile(s.info.name, s.info.createdAt, d.disk, format);
    const footer = format === 'vhd' ? vhdFooter(d.size, xenVdiUuid(s.info.name, s.info.createdAt, d.disk), s.info.createdAt) : undefined;
    return this.#node(`vdi:${format}:${sessionKey(s)}:${d.disk}`, name, dir, { k: 'flat', s, disk: d, layout, ...(footer ? { footer } : {}) });
  }

  /** The name of a session disk's file in a folder of this layout. */
  #flatName(s: SessionGroup, d: CatalogEntry, layout: Layout): string {
    return layout === 'vmware' ? flatName(d.disk) : xenVdiFile(s.info.name, s.info.createdAt, d.disk, this.#xenFormat === 'vhd' ? 'vhd' : 'raw');
  }

  #pointNode(vmDir: DsNode, p: PointGroup): DsNode {
    return this.#node(`point:${p.info.vm}:${p.info.id}`, p.info.id, vmDir, { k: 'point', p });
  }

  #point(vm: string, id: string): PointGroup | undefined {
    return this.#catalog.vms().find((v) => v.vm === vm)?.points.find((p) => p.info.id === id);
  }

  /**
   * LOOKUP in a session folder or one of its sub-directories, by name: the folder's flat disks
   * (from memory) hide real files of the same name, else one lstat of that name. Never lists.
   */
  async #lookupReal(dir: DsNode, name: string): Promise<DsNode> {
    const k = dir.kind;
    if (name.includes('/') || name.includes('\0')) throw new NfsError(Nfs3Stat.NOENT, `no such entry '${name}'`);
    if (Buffer.byteLength(name) > 255) throw new NfsError(Nfs3Stat.NAMETOOLONG, 'file name longer than 255 bytes');
    let s: SessionGroup;
    let dirPath: string;
    if (k.k === 'session') {
      const d = k.s.disks.find((x) => this.#flatName(k.s, x, k.layout) === name);
      if (d) return this.#flatNode(dir, k.s, d, k.layout);
      await this.ensureSessionDir(k.s, k.layout);
      s = k.s;
      dirPath = k.realDir;
    } else if (k.k === 'real' && k.dir) {
      s = k.s;
      dirPath = k.path;
    } else throw new NfsError(Nfs3Stat.NOTDIR, 'not a directory');
    try {
      return await this.realNode(dir, s, name, path.join(dirPath, name));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new NfsError(Nfs3Stat.NOENT, `no such entry '${name}'`);
      throw err;
    }
  }

  async #listReal(dir: DsNode, s: SessionGroup, dirPath: string): Promise<DsNode[]> {
    let names: string[];
    try {
      names = await fs.promises.readdir(dirPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: DsNode[] = [];
    for (const name of names) {
      try {
        out.push(await this.realNode(dir, s, name, path.join(dirPath, name)));
      } catch {
        // removed while listing
      }
    }
    return out;
  }

  /**
   * The node if its object still exists (refreshed when the session source now hands out a new
   * view of the same session), else undefined.
   */
  async #current(n: DsNode): Promise<DsNode | undefined> {
    const k = n.kind;
    switch (k.k) {
      case 'root':
      case 'sessions':
      case 'backups':
      case 'xen':
        return n;
      case 'session':
      case 'flat':
      case 'real': {
        const s = this.#catalog.session(k.s.info.name);
        if (!s || sessionKey(s) !== sessionKey(k.s)) return undefined;
        if (k.k === 'real') {
          try {
            const st = await fs.promises.lstat(k.path, { bigint: true });
            if (this.codec.fileid(`real:${sessionKey(s)}:${st.ino}`) !== n.id || st.birthtimeNs !== n.gen) return undefined;
          } catch {
            return undefined;
          }
        }
        let kind: NodeKind;
        if (k.k === 'flat') {
          const disk = s.disks.find((d) => d.disk === k.disk.disk);
          if (disk === k.disk) return n;
          if (!disk) return undefined;
          kind = { ...k, s, disk };
        } else kind = { ...k, s };
        const fresh: DsNode = { ...n, kind };
        this.#index.set(n.id, fresh);
        return fresh;
      }
      case 'vm':
        return this.#catalog.vms().some((v) => v.vm === k.vm) ? n : undefined;
      case 'point':
      case 'point-flat':
      case 'point-desc':
      case 'point-config':
        return this.#point(k.p.info.vm, k.p.info.id) ? n : undefined;
    }
  }

  /**
   * Walks the tree when a handle is unknown, unless a walk since the last change found everything
   * (then the handle is simply gone); at most one walk at a time, and one per 10 s for the rest.
   */
  #rebuildIfUseful(): Promise<void> {
    if (this.#complete && Date.now() - this.#lastWalk < 10_000) return Promise.resolve();
    this.#walking ??= (async () => {
      this.#complete = true;
      try {
        await this.#rebuild();
      } catch {
        this.#complete = false;
      } finally {
        this.#lastWalk = Date.now();
        this.#walking = undefined;
      }
    })();
    return this.#walking;
  }

  /** Walks the whole tree, refilling the index (after a restart, or when a handle is unknown). */
  async #rebuild(): Promise<void> {
    const walk = async (dir: DsNode): Promise<void> => {
      for (const e of await this.list(dir)) if (isDir(e)) await walk(e);
    };
    try {
      await walk(this.root);
    } catch (err) {
      this.#log.warn('datastore walk failed', { err: (err as Error).message });
    }
  }

  /** `<filesDir>/xen/`: the SR folder's own files (the storage manager's test files, sm-hardlink.conf, ...). */
  async #prepareSrDir(s: SessionGroup): Promise<void> {
    // Not recursive: the session owns its directory; if it is gone, so is the session.
    await fs.promises.mkdir(path.join(s.info.filesDir, XEN_DIR)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }

  async #prepareSessionDir(s: SessionGroup): Promise<void> {
    const real = path.join(s.info.filesDir, 'nfs');
    if (await fs.promises.stat(real).then(() => true, () => false)) return;
    const tmp = path.join(s.info.filesDir, 'nfs.tmp');
    await fs.promises.rm(tmp, { recursive: true, force: true });
    // Not recursive: the session owns its directory; if it is gone, so is the session.
    await fs.promises.mkdir(tmp);
    for (const d of s.disks) {
      await fs.promises.writeFile(path.join(tmp, descriptorName(d.disk)), vmdkDescriptor(d.disk, d.size, `${sessionKey(s)}:${d.disk}`));
    }
    const point = this.#catalog.catalog.vms().find((v) => v.vm === s.info.vm)?.points.find((p) => p.info.id === s.info.pointId);
    for (const c of point?.info.configs ?? []) {
      if (s.disks.some((d) => flatName(d.disk) === c)) continue;
      await fs.promises.writeFile(path.join(tmp, c), await point!.info.readConfig(c));
    }
    await fs.promises.rename(tmp, real);
    this.#log.info('session folder prepared', { session: s.info.name, dir: real });
  }
}

export function sessionKey(s: SessionGroup): string {
  return `${s.info.name}@${s.info.createdAt.getTime()}`;
}

const byName = (a: DsNode, b: DsNode): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
