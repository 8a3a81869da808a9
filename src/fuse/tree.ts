/**
 * FuseTree: the read-only namespace the FUSE mount shows, built from the views of exports/views.ts
 * only (restore points through a PointSource, recovery sessions through a SessionSource):
 *
 *   /vms/<vm>/<point>/<disk>.raw          whole disk of a restore point
 *   /vms/<vm>/<point>/<disk>.parts/<n>    partition n of that disk (MBR incl. logical, GPT)
 *   /vms/<vm>/<point>/config/<file>       VM config files stored with the point
 *   /vms/<vm>/latest -> <point>           symlink to the newest point (a link, not a copy, so the
 *                                         kernel never caches one point's bytes under another's inode)
 *   /sessions/<name>/<disk>.raw           live view of a session's disk (base + overlay)
 *
 * Design notes:
 *  - The tree is not materialised: `lookup(path)` walks from the root, asking each directory for its
 *    children. Every step is cheap because of three caches: the point index (PointSource.list(),
 *    kept for `cacheMs` and dropped on onChange), partition tables per point disk (parsed once;
 *    restore points never change) and config file contents (small; needed for their size).
 *    Session changes are read live from the SessionSource (it is in memory).
 *  - Inode numbers are a 32-bit FNV-1a hash of the path (fuse-native passes st_ino as 32 bits), so
 *    they survive restarts; a collision within one mount is resolved by probing, which is stable as
 *    long as the colliding paths are looked up in the same order. The root is inode 1.
 *  - Sizes and mtimes come from the views: a point's files carry its backup time; a session's
 *    files its creation time. Directories carry the newest time below them.
 *  - Files are opened through `FileNode.open()`: a point disk is opened (through the shared chunk
 *    cache) per open file and closed on release; a session file asks `disk.device()` on every read,
 *    so a switch-over to another device is followed, and never closes it (the session owns it).
 */
import { checked, type CheckedDevice } from '../blockdev/checked.js';
import { readPartitionTable, type PartitionTable } from '../blockdev/partitions.js';
import type { BlockDevice } from '../blockdev/types.js';
import type { PointDiskView, PointSource, PointView, SessionDiskView, SessionSource } from '../exports/views.js';
import type { Logger } from '../util/log.js';
import { readDevice } from './read.js';

export interface FileSource {
  readonly size: number;
  /** Fills `dst` from byte `pos` (the caller keeps pos + dst.length <= size). */
  read(dst: Uint8Array, pos: number): Promise<void>;
  close(): Promise<void>;
}

interface NodeBase {
  ino: number;
  mtime: Date;
}
export interface DirNode extends NodeBase {
  kind: 'dir';
  children(): Promise<Map<string, Node>>;
}
export interface LinkNode extends NodeBase {
  kind: 'link';
  target: string;
}
export interface FileNode extends NodeBase {
  kind: 'file';
  size: number;
  open(): Promise<FileSource>;
}
export type Node = DirNode | LinkNode | FileNode;

export interface FuseTreeOptions {
  points: PointSource;
  sessions: SessionSource;
  log: Logger;
  /** How long a listing of restore points is reused without a change notice. Default 2000 ms. */
  cacheMs?: number;
  /** Time shown on the root directory. Default: now. */
  mountedAt?: Date;
}

const DISK_SUFFIX = '.raw';
const PARTS_SUFFIX = '.parts';

export class FuseTree {
  readonly #points: PointSource;
  readonly #sessions: SessionSource;
  readonly #log: Logger;
  readonly #cacheMs: number;
  readonly #mountedAt: Date;
  readonly #unsubscribe: Array<() => void>;
  #index: { at: number; byVm: Promise<Map<string, PointView[]>> } | undefined;
  readonly #tables = new Map<string, Promise<PartitionTable>>();
  readonly #configs = new Map<string, Promise<Buffer>>();
  readonly #inoByPath = new Map<string, number>();
  readonly #pathByIno = new Map<number, string>();

  constructor(opts: FuseTreeOptions) {
    this.#points = opts.points;
    this.#sessions = opts.sessions;
    this.#log = opts.log;
    this.#cacheMs = opts.cacheMs ?? 2000;
    this.#mountedAt = opts.mountedAt ?? new Date();
    this.#unsubscribe = [this.#points.onChange(() => this.invalidate())];
  }

  /** Forgets cached listings (called on PointSource changes). */
  invalidate(): void {
    this.#index = undefined;
    this.#tables.clear();
    this.#configs.clear();
  }

  dispose(): void {
    for (const u of this.#unsubscribe) u();
    this.#unsubscribe.length = 0;
  }

  /** The node at an absolute path ('/', '/vms/web1'), or undefined. */
  async lookup(path: string): Promise<Node | undefined> {
    const parts = path.split('/').filter((p) => p !== '');
    let node: Node = this.#root();
    for (const name of parts) {
      if (node.kind !== 'dir') return undefined;
      const next: Node | undefined = (await node.children()).get(name);
      if (!next) return undefined;
      node = next;
    }
    return node;
  }

  /** Stable inode number of a path (see the design notes). */
  ino(path: string): number {
    const known = this.#inoByPath.get(path);
    if (known !== undefined) return known;
    let h = 0x811c9dc5;
    for (const b of Buffer.from(path, 'utf8')) h = Math.imul(h ^ b, 0x01000193) >>> 0;
    if (h < 2) h += 2;
    while (this.#pathByIno.has(h)) h = h >= 0xffffffff ? 2 : h + 1;
    this.#inoByPath.set(path, h);
    this.#pathByIno.set(h, path);
    return h;
  }

  // ---- directories ------------------------------------------------------------------------

  #root(): DirNode {
    return {
      kind: 'dir',
      ino: 1,
      mtime: this.#mountedAt,
      children: async () =>
        new Map<string, Node>([
          ['vms', this.#dir('/vms', newest((await this.#byVm()).values(), this.#mountedAt), () => this.#vms())],
          ['sessions', this.#dir('/sessions', newestSession(this.#sessions, this.#mountedAt), async () => this.#sessionDirs())],
        ]),
    };
  }

  #dir(path: string, mtime: Date, children: () => Promise<Map<string, Node>>): DirNode {
    return { kind: 'dir', ino: this.ino(path), mtime, children };
  }

  async #vms(): Promise<Map<string, Node>> {
    const out = new Map<string, Node>();
    for (const [vm, points] of await this.#byVm()) {
      const base = `/vms/${vm}`;
      out.set(vm, this.#dir(base, points[points.length - 1]!.createdAt, async () => this.#pointDirs(base, points)));
    }
    return out;
  }

  #pointDirs(base: string, points: PointView[]): Map<string, Node> {
    const out = new Map<string, Node>();
    for (const p of points) {
      const dir = `${base}/${p.id}`;
      out.set(p.id, this.#dir(dir, p.createdAt, async () => this.#pointChildren(dir, p)));
    }
    const latest = points[points.length - 1]!;
    out.set('latest', { kind: 'link', ino: this.ino(`${base}/latest`), mtime: latest.createdAt, target: latest.id });
    return out;
  }

  #pointChildren(dir: string, p: PointView): Map<string, Node> {
    const out = new Map<string, Node>();
    for (const d of p.disks) {
      const file = `${dir}/${d.name}${DISK_SUFFIX}`;
      out.set(`${d.name}${DISK_SUFFIX}`, {
        kind: 'file',
        ino: this.ino(file),
        mtime: p.createdAt,
        size: d.size,
        open: () => openDiskFile(d, 0, d.size),
      });
      const parts = `${dir}/${d.name}${PARTS_SUFFIX}`;
      out.set(`${d.name}${PARTS_SUFFIX}`, this.#dir(parts, p.createdAt, () => this.#partitionFiles(parts, p, d)));
    }
    if (p.configs.length > 0) {
      const cdir = `${dir}/config`;
      out.set('config', this.#dir(cdir, p.createdAt, () => this.#configFiles(cdir, p)));
    }
    return out;
  }

  async #partitionFiles(dir: string, p: PointView, d: PointDiskView): Promise<Map<string, Node>> {
    const table = await this.partitionTable(p, d);
    const out = new Map<string, Node>();
    for (const part of table.partitions) {
      out.set(String(part.number), {
        kind: 'file',
        ino: this.ino(`${dir}/${part.number}`),
        mtime: p.createdAt,
        size: part.size,
        open: () => openDiskFile(d, part.offset, part.size),
      });
    }
    return out;
  }

  /** The partition table of a point's disk, parsed once (points never change). */
  partitionTable(p: PointView, d: PointDiskView): Promise<PartitionTable> {
    const key = `${p.vm}@${p.id}/${d.name}`;
    let t = this.#tables.get(key);
    if (!t) {
      t = (async () => {
        const dev = await d.open();
        try {
          const table = await readPartitionTable(dev, key);
          for (const w of table.warnings) this.#log.warn('partition table', { disk: key, warning: w });
          return table;
        } finally {
          await dev.close();
        }
      })();
      // A malformed table stays cached (it cannot change); an I/O error is retried next time.
      t.catch((err: { code?: string }) => {
        if (err?.code !== 'ERR_PARTITION_TABLE') this.#tables.delete(key);
      });
      this.#tables.set(key, t);
    }
    return t;
  }

  async #configFiles(dir: string, p: PointView): Promise<Map<string, Node>> {
    const out = new Map<string, Node>();
    for (const name of p.configs) {
      const key = `${p.vm}@${p.id}/${name}`;
      let content = this.#configs.get(key);
      if (!content) {
        content = p.readConfig(name);
        content.catch(() => this.#configs.delete(key));
        this.#configs.set(key, content);
      }
      const buf = await content;
      out.set(name, { kind: 'file', ino: this.ino(`${dir}/${name}`), mtime: p.createdAt, size: buf.length, open: async () => bufferFile(buf) });
    }
    return out;
  }

  #sessionDirs(): Map<string, Node> {
    const out = new Map<string, Node>();
    for (const s of this.#sessions.list()) {
      const dir = `/sessions/${s.name}`;
      out.set(
        s.name,
        this.#dir(dir, s.createdAt, async () => {
          const files = new Map<string, Node>();
          for (const d of s.disks) {
            files.set(`${d.name}${DISK_SUFFIX}`, {
              kind: 'file',
              ino: this.ino(`${dir}/${d.name}${DISK_SUFFIX}`),
              mtime: s.createdAt,
              size: d.size,
              open: async () => sessionFile(d),
            });
          }
          return files;
        }),
      );
    }
    return out;
  }

  /** Points by VM, oldest first, from a listing at most `cacheMs` old. */
  #byVm(): Promise<Map<string, PointView[]>> {
    const now = Date.now();
    if (!this.#index || now - this.#index.at > this.#cacheMs) {
      const byVm = this.#points.list().then((all) => {
        const m = new Map<string, PointView[]>();
        for (const p of all) m.set(p.vm, [...(m.get(p.vm) ?? []), p]);
        for (const list of m.values()) list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        return m;
      });
      byVm.catch(() => {
        if (this.#index?.byVm === byVm) this.#index = undefined;
      });
      this.#index = { at: now, byVm };
    }
    return this.#index.byVm;
  }
}

function newest(lists: Iterable<PointView[]>, fallback: Date): Date {
  let t = fallback.getTime();
  for (const l of lists) for (const p of l) t = Math.max(t, p.createdAt.getTime());
  return new Date(t);
}

function newestSession(s: SessionSource, fallback: Date): Date {
  return new Date(Math.max(fallback.getTime(), ...s.list().map((x) => x.createdAt.getTime())));
}

/** A window [offset, offset + size) of a point disk, opened now and closed on release. */
async function openDiskFile(d: PointDiskView, offset: number, size: number): Promise<FileSource> {
  const dev = checked(await d.open());
  return {
    size,
    read: (dst, pos) => readDevice(dev, dst, offset + pos),
    close: () => dev.close(),
  };
}

function sessionFile(d: SessionDiskView): FileSource {
  let inner: BlockDevice | undefined;
  let dev: CheckedDevice | undefined;
  return {
    size: d.size,
    read: (dst, pos) => {
      const now = d.device();
      if (now !== inner) {
        inner = now;
        dev = checked(now);
      }
      return readDevice(dev!, dst, pos);
    },
    close: async () => undefined, // the session owns its device
  };
}

function bufferFile(buf: Buffer): FileSource {
  return {
    size: buf.length,
    read: async (dst, pos) => {
      dst.set(buf.subarray(pos, pos + dst.length));
    },
    close: async () => undefined,
  };
}
