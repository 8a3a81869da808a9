/** The objects of the datastore tree and their attributes. */
import type { CatalogEntry, PointGroup, SessionGroup } from '../../exports/catalog.js';

export type NodeKind =
  | { k: 'root' }
  | { k: 'sessions' }
  | { k: 'backups' }
  /** `/xen`: one storage repository folder per session (xen-names.ts). */
  | { k: 'xen' }
  /**
   * `/sessions/<name>/` (layout vmware): virtual flat disks merged with the real files under
   * `<filesDir>/nfs/`; `/xen/<SR-UUID>/` (layout xen): virtual VDIs merged with `<filesDir>/xen/`.
   */
  | { k: 'session'; s: SessionGroup; realDir: string; layout: Layout }
  /**
   * The session's published disk: `/sessions/<name>/<disk>-flat.vmdk` or `/xen/<SR>/<VDI>.raw`;
   * `/xen/<SR>/<VDI>.vhd` has a fixed-VHD footer after the disk's bytes.
   */
  | { k: 'flat'; s: SessionGroup; disk: CatalogEntry; layout: Layout; footer?: Buffer }
  /** A file or directory the hypervisor (or session set-up) created, kept as an ordinary file. */
  | { k: 'real'; s: SessionGroup; path: string; dir: boolean }
  | { k: 'vm'; vm: string }
  | { k: 'point'; p: PointGroup }
  | { k: 'point-flat'; p: PointGroup; disk: CatalogEntry }
  | { k: 'point-desc'; p: PointGroup; disk: CatalogEntry; text: Buffer }
  | { k: 'point-config'; p: PointGroup; name: string };

export type Layout = 'vmware' | 'xen';

export interface DsNode {
  readonly id: bigint;
  readonly gen: bigint;
  readonly name: string;
  readonly parentId: bigint;
  readonly kind: NodeKind;
}

export function isDir(n: DsNode): boolean {
  const k = n.kind.k;
  return k === 'root' || k === 'sessions' || k === 'backups' || k === 'xen' || k === 'session' || k === 'vm' || k === 'point' || (k === 'real' && n.kind.dir);
}

/** Objects whose contents or entries the client may change (before the export's read-only option). */
export function isWritable(n: DsNode): boolean {
  const k = n.kind.k;
  return k === 'session' || k === 'flat' || k === 'real';
}

export interface NodeAttrs {
  dir: boolean;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: bigint;
  used: bigint;
  fileid: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** Bytes of a session disk's file: the disk, and a VHD footer when it has one. */
export function flatSize(k: { disk: CatalogEntry; footer?: Buffer }): number {
  return k.disk.size + (k.footer?.length ?? 0);
}

export const msToNs = (ms: number): bigint => BigInt(Math.round(ms)) * 1_000_000n;
