/** NFSv3 procedures on single objects: GETATTR, SETATTR, ACCESS, READ, WRITE, COMMIT, FSSTAT, FSINFO, PATHCONF. */
import fs from 'node:fs';
import * as m from '@jsonjoy.com/json-pack/lib/nfs/v3/messages.js';
import { Nfs3Stat, NfsError } from '../error-map.js';
import { isWritable } from '../datastore/nodes.js';
import { checkOwnerChange, checkSetAttrs } from '../datastore/ownership.js';
import type { AuthSys } from '../rpc/auth.js';
import { fattr, fromSattr, postOp, wccOf, writeFattr, FATTR3_BYTES } from './attrs.js';
import type { NfsContext, RawReply } from './context.js';

const ACCESS_READ = 0x01;
const ACCESS_LOOKUP = 0x02;
const ACCESS_MODIFY = 0x04;
const ACCESS_EXTEND = 0x08;
const ACCESS_DELETE = 0x10;

export async function getattr(c: NfsContext, a: m.Nfsv3GetattrRequest): Promise<m.Nfsv3GetattrResponse> {
  const n = await c.ds.resolve(a.object.data);
  return new m.Nfsv3GetattrResponse(Nfs3Stat.OK, new m.Nfsv3GetattrResOk(fattr(await c.ds.attrs(n), c.fsid)));
}

/** uid/gid changes are checked against the caller (ownership.ts) and never applied on disk. */
export async function setattr(c: NfsContext, a: m.Nfsv3SetattrRequest, caller: AuthSys | undefined): Promise<m.Nfsv3SetattrResponse> {
  const n = await c.ds.resolve(a.object.data);
  const wanted = fromSattr(a.newAttributes);
  checkSetAttrs(wanted);
  const before = await c.ds.attrs(n);
  checkOwnerChange(wanted, caller, before);
  if (a.guard.check && a.guard.objCtime) {
    const ctime = BigInt(a.guard.objCtime.seconds) * 1_000_000_000n + BigInt(a.guard.objCtime.nseconds);
    if (ctime !== before.ctimeNs) throw new NfsError(Nfs3Stat.NOT_SYNC, 'ctime guard does not match');
  }
  await c.ops.setattr(n, { ...wanted, uid: undefined, gid: undefined });
  return new m.Nfsv3SetattrResponse(Nfs3Stat.OK, new m.Nfsv3SetattrResOk(wccOf(before, await c.ds.attrs(n), c.fsid)));
}

export async function access(c: NfsContext, a: m.Nfsv3AccessRequest, readOnly: boolean): Promise<m.Nfsv3AccessResponse> {
  const n = await c.ds.resolve(a.object.data);
  const attrs = await c.ds.attrs(n);
  let allowed = ACCESS_READ | (attrs.dir ? ACCESS_LOOKUP : 0);
  if (!readOnly && isWritable(n)) allowed |= ACCESS_MODIFY | ACCESS_EXTEND | (n.kind.k === 'real' ? ACCESS_DELETE : 0);
  if (!readOnly && n.kind.k === 'session') allowed |= ACCESS_DELETE; // entries of the folder may be deleted
  return new m.Nfsv3AccessResponse(Nfs3Stat.OK, new m.Nfsv3AccessResOk(postOp(attrs, c.fsid), a.access & allowed));
}

/**
 * READ, hand-encoded: status, post_op_attr, count, eof, then the data read straight into the
 * reply buffer (no copy). Returns the reply body. Short at the end of the file, and when the
 * client asks for more than rtmax (clamped, as knfsd does; RFC 1813 allows the short read).
 * The data counts against the daemon's in-flight budget until the socket has taken the reply;
 * a client that leaves while waiting for it gives up its place (`signal`).
 */
export async function read(c: NfsContext, a: m.Nfsv3ReadRequest, signal?: AbortSignal): Promise<RawReply> {
  const n = await c.ds.resolve(a.file.data);
  const attrs = await c.ds.attrs(n);
  if (attrs.dir) throw new NfsError(Nfs3Stat.ISDIR, 'is a directory');
  const size = attrs.size;
  const offset = a.offset;
  const want = Math.min(a.count, c.maxIo);
  const count = offset >= size ? 0 : Number(size - offset < BigInt(want) ? size - offset : BigInt(want));
  const held = count > 0 ? await c.budget.acquire(count, signal) : 0;
  const head = 4 + 4 + FATTR3_BYTES + 12;
  const pad = (4 - (count % 4)) % 4;
  const buf = c.buffers.acquire(head + count + pad);
  let got = 0;
  try {
    if (count > 0) got = await c.ops.read(n, buf.subarray(head, head + count), Number(offset));
  } catch (err) {
    c.buffers.release(buf);
    c.budget.release(held);
    throw err;
  }
  const eof = offset + BigInt(got) >= size;
  buf.writeUInt32BE(Nfs3Stat.OK, 0);
  buf.writeUInt32BE(1, 4);
  let x = writeFattr(buf, 8, attrs, c.fsid);
  buf.writeUInt32BE(got, x);
  buf.writeUInt32BE(eof ? 1 : 0, x + 4);
  buf.writeUInt32BE(got, x + 8);
  x += 12 + got;
  const end = x + ((4 - (got % 4)) % 4);
  buf.fill(0, x, end);
  let released = false;
  const sent = (): void => {
    if (released) return;
    released = true;
    c.buffers.release(buf);
    c.budget.release(held);
  };
  return { raw: true, body: [buf.subarray(0, end)], sent };
}

/**
 * WRITE. More data than wtmax is cut to wtmax and the reply's count says so (a short write:
 * RFC 1813 FSINFO "any WRITE with a count greater than wtmax will result in a short write of at
 * most wtmax bytes", and knfsd does the same); the client sends the rest again. The RPC record
 * cap keeps such a WRITE from being much larger than wtmax in the first place. The data counts
 * against the daemon's in-flight budget while it is written.
 */
export async function write(c: NfsContext, a: m.Nfsv3WriteRequest, signal?: AbortSignal): Promise<m.Nfsv3WriteResponse> {
  const n = await c.ds.resolve(a.file.data);
  const count = Math.min(a.count, c.maxIo);
  const data = a.data.length > count ? a.data.subarray(0, count) : a.data;
  const before = await c.ds.attrs(n);
  if (a.offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new NfsError(Nfs3Stat.FBIG, 'offset too large');
  const held = data.length > 0 ? await c.budget.acquire(data.length, signal) : 0;
  let committed;
  try {
    committed = await c.ops.write(n, data, Number(a.offset), a.stable);
  } finally {
    c.budget.release(held);
  }
  const after = await c.ds.attrs(n);
  return new m.Nfsv3WriteResponse(Nfs3Stat.OK, new m.Nfsv3WriteResOk(wccOf(before, after, c.fsid), data.length, committed, c.ops.verifier));
}

export async function commit(c: NfsContext, a: m.Nfsv3CommitRequest): Promise<m.Nfsv3CommitResponse> {
  const n = await c.ds.resolve(a.file.data);
  await c.ops.commit(n);
  const attrs = await c.ds.attrs(n);
  return new m.Nfsv3CommitResponse(Nfs3Stat.OK, new m.Nfsv3CommitResOk(wccOf(attrs, attrs, c.fsid), c.ops.verifier));
}

export async function fsstat(c: NfsContext, a: m.Nfsv3FsstatRequest): Promise<m.Nfsv3FsstatResponse> {
  const n = await c.ds.resolve(a.fsroot.data);
  const attrs = await c.ds.attrs(n);
  const s = await fs.promises.statfs(c.statfsPath, { bigint: true });
  return new m.Nfsv3FsstatResponse(
    Nfs3Stat.OK,
    new m.Nfsv3FsstatResOk(postOp(attrs, c.fsid), s.blocks * s.bsize, s.bfree * s.bsize, s.bavail * s.bsize, s.files, s.ffree, s.ffree, 0),
  );
}

export async function fsinfo(c: NfsContext, a: m.Nfsv3FsinfoRequest): Promise<m.Nfsv3FsinfoResponse> {
  const n = await c.ds.resolve(a.fsroot.data);
  const attrs = await c.ds.attrs(n);
  const FSF3_HOMOGENEOUS = 0x08;
  const FSF3_CANSETTIME = 0x10;
  return new m.Nfsv3FsinfoResponse(
    Nfs3Stat.OK,
    new m.Nfsv3FsinfoResOk(postOp(attrs, c.fsid), c.maxIo, c.maxIo, 4096, c.maxIo, c.maxIo, 4096, 64 * 1024, 0x7fffffffffffffffn, { seconds: 0, nseconds: 1 }, FSF3_HOMOGENEOUS | FSF3_CANSETTIME),
  );
}

export async function pathconf(c: NfsContext, a: m.Nfsv3PathconfRequest): Promise<m.Nfsv3PathconfResponse> {
  const n = await c.ds.resolve(a.object.data);
  const attrs = await c.ds.attrs(n);
  return new m.Nfsv3PathconfResponse(Nfs3Stat.OK, new m.Nfsv3PathconfResOk(postOp(attrs, c.fsid), 1, 255, true, true, false, true));
}
