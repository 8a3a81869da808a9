/**
 * FuseTree: the read-only namespace the FUSE mount shows, rendered from the publication catalog's
 * FUSE view (exports/catalog.ts) and nothing else:
 *
 *   /vms/<vm>/<point>/<disk>.raw          whole disk of a restore point
 *   /vms/<vm>/<point>/<disk>.parts/<n>    partition n of that disk (MBR incl. logical, GPT)
 *   /vms/<vm>/<point>/config/<file>       VM config files stored with the point
 *   /vms/<vm>/latest -> <point>           symlink to the newest point (a link, not a copy, so the
 *                                         kernel never caches one point's bytes under another's inode)
 *   /sessions/<name>/<disk>.raw           live view of a session's disk (base + overlay, or the
 *                                         production copy after a switch)
 *
 * Design notes:
 *  - The tree is not materialised: `lookup(path)` walks from the root, asking each directory for its
 *    children, which come straight from the catalog (in memory). Two caches: partition tables per
 *    point disk (parsed once; restore points never change) and config file contents (small; needed
 *    for their size); both are dropped when the catalog removes a point.
 *  - Inode numbers are a 32-bit FNV-1a hash of the path (fuse-native passes st_ino as 32 bits), so
 *    they survive restarts; a collision within one mount is resolved by probing, which is stable as
 *    long as the colliding paths are looked up in the same order. The root is inode 1.
 *  - Sizes and mtimes come from the catalog: a point's files carry its backup time; a session's
 *    files its creation time. Directories carry the newest time below them.
 *  - Every open file opens its catalog entry (its own checked() gate) and closes it on release.
 */
import type { CheckedDevice } from '../blockdev/checked.js';
import { readPartitionTable, type PartitionTable } from '../blockdev/partitions.js';
import type { CatalogEntry, CatalogView, PointGroup, VmGroup } from '../exports/catalog.js';
import { readAt } from '../exports/read-at.js';
import type { Logger } from '../util/log.js';

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
  /** The catalog as published on FUSE. */
  catalog: CatalogView;
  log: Logger;
  /** Time shown on the root directory. Default: now. */
  mountedAt?: Date;
}

const DISK_SUFFIX = '.raw';
const PARTS_SUFFIX = '.parts';

export class FuseTree {
  readonly #catalog: CatalogView;
  readonly #log: Logger;
  readonly #mountedAt: Date;
  readonly #unsubscribe: Array<() => void>;
  readonly #tables = new Map<string, Promise<PartitionTable>>();
  readonly #configs = new Map<string, Promise<Buffer>>();
  readonly #inoByPath = new Map<string, number>();
  readonly #pathByIno = new Map<number, string>();

  constructor(opts: FuseTreeOptions) {
    this.#catalog = opts.catalog;
    this.#log = opts.log;
    this.#mountedAt = opts.mountedAt ?? new Date();
    this.#unsubscribe = [
      this.#catalog.onChange((e, what) => {
        if (what === 'removed' && e.point) this.#forgetPoint(e.point.vm, e.point.id);
      }),
    ];
  }

  #forgetPoint(vm: string, id: string): void {
    const prefix = `${vm}@${id}/`;
    for (const m of [this.#tables, this.#configs]) for (const k of m.keys()) if (k.startsWith(prefix)) m.delete(k);
  }

  /** Stops following the catalog. */
  close(): void {
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
          ['vms', this.#dir('/vms', newest(this.#catalog.vms().flatMap((v) => v.points.map((p) => p.info.createdAt)), this.#mountedAt), async () => this.#vms())],
          ['sessions', this.#dir('/sessions', newest(this.#catalog.sessions().map((s) => s.info.createdAt), this.#mountedAt), async () => this.#sessionDirs())],
        ]),
    };
  }

  #dir(path: string, mtime: Date, children: () => Promise<Map<string, Node>>): DirNode {
    return { kind: 'dir', ino: this.ino(path), mtime, children };
  }

  #vms(): Map<string, Node> {
    const out = new Map<string, Node>();
    for (const v of this.#catalog.vms()) {
      const base = `/vms/${v.vm}`;
      out.set(v.vm, this.#dir(base, v.points.at(-1)!.info.createdAt, async () => this.#pointDirs(base, v)));
    }
    return out;
  }

  #pointDirs(base: string, v: VmGroup): Map<string, Node> {
    const out = new Map<string, Node>();
    for (const p of v.points) {
      const dir = `${base}/${p.info.id}`;
      out.set(p.info.id, this.#dir(dir, p.info.createdAt, async () => this.#pointChildren(dir, p)));
    }
    const latest = v.points.at(-1)!.info;
    out.set('latest', { kind: 'link', ino: this.ino(`${base}/latest`), mtime: latest.createdAt, target: latest.id });
    return out;
  }

  #pointChildren(dir: string, p: PointGroup): Map<string, Node> {
    const out = new Map<string, Node>();
    const mtime = p.info.createdAt;
    for (const d of p.disks) {
      out.set(`${d.disk}${DISK_SUFFIX}`, this.#diskFile(`${dir}/${d.disk}${DISK_SUFFIX}`, d, mtime));
      const parts = `${dir}/${d.disk}${PARTS_SUFFIX}`;
      out.set(`${d.disk}${PARTS_SUFFIX}`, this.#dir(parts, mtime, () => this.#partitionFiles(parts, d)));
    }
    if (p.info.configs.length > 0) {
      const cdir = `${dir}/config`;
      out.set('config', this.#dir(cdir, mtime, () => this.#configFiles(cdir, p)));
    }
    return out;
  }

  /** A file over a window [offset, offset + size) of a published disk (the whole disk by default). */
  #diskFile(path: string, d: CatalogEntry, mtime: Date, offset = 0, size = d.size): FileNode {
    return { kind: 'file', ino: this.ino(path), mtime, size, open: async () => windowFile(await d.open({ onUnexpectedError: this.#unexpected(path) }), offset, size) };
  }

  #unexpected(path: string): (err: unknown, op: string) => void {
    return (err, op) => this.#log.error('unexpected device error', { path, op, err: (err as Error)?.message ?? String(err) });
  }

  async #partitionFiles(dir: string, d: CatalogEntry): Promise<Map<string, Node>> {
    const mtime = d.point!.createdAt;
    const table = await this.partitionTable(d);
    const out = new Map<string, Node>();
    for (const part of table.partitions) out.set(String(part.number), this.#diskFile(`${dir}/${part.number}`, d, mtime, part.offset, part.size));
    return out;
  }

  /** The partition table of a point's disk, parsed once (points never change). */
  partitionTable(d: CatalogEntry): Promise<PartitionTable> {
    const key = d.name;
    let t = this.#tables.get(key);
    if (!t) {
      t = (async () => {
        const dev = await d.open({ onUnexpectedError: this.#unexpected(key) });
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

  async #configFiles(dir: string, p: PointGroup): Promise<Map<string, Node>> {
    const out = new Map<string, Node>();
    for (const name of p.info.configs) {
      const key = `${p.info.vm}@${p.info.id}/config/${name}`;
      let content = this.#configs.get(key);
      if (!content) {
        content = p.info.readConfig(name);
        content.catch(() => this.#configs.delete(key));
        this.#configs.set(key, content);
      }
      const buf = await content;
      out.set(name, { kind: 'file', ino: this.ino(`${dir}/${name}`), mtime: p.info.createdAt, size: buf.length, open: async () => bufferFile(buf) });
    }
    return out;
  }

  #sessionDirs(): Map<string, Node> {
    const out = new Map<string, Node>();
    for (const s of this.#catalog.sessions()) {
      const dir = `/sessions/${s.info.name}`;
      const mtime = s.info.createdAt;
      out.set(s.info.name, this.#dir(dir, mtime, async () => new Map(s.disks.map((d) => [`${d.disk}${DISK_SUFFIX}`, this.#diskFile(`${dir}/${d.disk}${DISK_SUFFIX}`, d, mtime)]))));
    }
    return out;
  }
}

function newest(times: Date[], fallback: Date): Date {
  return new Date(Math.max(fallback.getTime(), ...times.map((t) => t.getTime())));
}

/** A window of an opened disk; closing the file closes this opener's gate. */
function windowFile(dev: CheckedDevice, offset: number, size: number): FileSource {
  return {
    size,
    read: (dst, pos) => readAt(dev, dst, offset + pos),
    close: () => dev.close(),
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
