/** NodeAttrs -> NFSv3 attribute structures (json-pack structs, and raw fattr3 for the READ fast path). */
import * as st from '@jsonjoy.com/json-pack/lib/nfs/v3/structs.js';
import type { NodeAttrs } from '../datastore/nodes.js';
import type { SetAttrs } from '../datastore/file-ops.js';

export const FTYPE_REG = 1;
export const FTYPE_DIR = 2;
export const FATTR3_BYTES = 84;

const time = (ns: bigint): st.Nfsv3Time => new st.Nfsv3Time(Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n));

export function fattr(a: NodeAttrs, fsid: bigint): st.Nfsv3Fattr {
  return new st.Nfsv3Fattr(
    a.dir ? FTYPE_DIR : FTYPE_REG,
    a.mode,
    a.nlink,
    a.uid,
    a.gid,
    a.size,
    a.used,
    new st.Nfsv3SpecData(0, 0),
    fsid,
    a.fileid,
    time(a.atimeNs),
    time(a.mtimeNs),
    time(a.ctimeNs),
  );
}

export const NO_ATTRS = new st.Nfsv3PostOpAttr(false);
export const NO_WCC = new st.Nfsv3WccData(new st.Nfsv3PreOpAttr(false), NO_ATTRS);

export function postOp(a: NodeAttrs | undefined, fsid: bigint): st.Nfsv3PostOpAttr {
  return a ? new st.Nfsv3PostOpAttr(true, fattr(a, fsid)) : NO_ATTRS;
}

export function wccOf(before: NodeAttrs | undefined, after: NodeAttrs | undefined, fsid: bigint): st.Nfsv3WccData {
  const pre = before ? new st.Nfsv3PreOpAttr(true, new st.Nfsv3WccAttr(before.size, time(before.mtimeNs), time(before.ctimeNs))) : new st.Nfsv3PreOpAttr(false);
  return new st.Nfsv3WccData(pre, postOp(after, fsid));
}

/** Writes fattr3 at `off` (84 bytes) for the hand-encoded READ reply. */
export function writeFattr(b: Buffer, off: number, a: NodeAttrs, fsid: bigint): number {
  b.writeUInt32BE(a.dir ? FTYPE_DIR : FTYPE_REG, off);
  b.writeUInt32BE(a.mode, off + 4);
  b.writeUInt32BE(a.nlink, off + 8);
  b.writeUInt32BE(a.uid, off + 12);
  b.writeUInt32BE(a.gid, off + 16);
  b.writeBigUInt64BE(a.size, off + 20);
  b.writeBigUInt64BE(a.used, off + 28);
  b.writeBigUInt64BE(0n, off + 36);
  b.writeBigUInt64BE(fsid, off + 44);
  b.writeBigUInt64BE(a.fileid, off + 52);
  let x = off + 60;
  for (const ns of [a.atimeNs, a.mtimeNs, a.ctimeNs]) {
    b.writeUInt32BE(Number(ns / 1_000_000_000n) >>> 0, x);
    b.writeUInt32BE(Number(ns % 1_000_000_000n), x + 4);
    x += 8;
  }
  return x;
}

/** sattr3 -> SetAttrs. */
export function fromSattr(s: st.Nfsv3Sattr): SetAttrs {
  const t = (how: number, v: st.Nfsv3Time | undefined): SetAttrs['atime'] =>
    how === 1 ? 'server' : how === 2 && v ? { sec: v.seconds, nsec: v.nseconds } : undefined;
  return {
    mode: s.mode.set ? s.mode.mode : undefined,
    uid: s.uid.set ? s.uid.uid : undefined,
    gid: s.gid.set ? s.gid.gid : undefined,
    size: s.size.set ? s.size.size : undefined,
    atime: t(s.atime.how, s.atime.atime),
    mtime: t(s.mtime.how, s.mtime.mtime),
  };
}
