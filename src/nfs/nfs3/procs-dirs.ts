/** NFSv3 procedures on directories: LOOKUP, CREATE, MKDIR, REMOVE, RMDIR, RENAME, READDIR, READDIRPLUS. */
import * as m from '@jsonjoy.com/json-pack/lib/nfs/v3/messages.js';
import * as st from '@jsonjoy.com/json-pack/lib/nfs/v3/structs.js';
import { Nfs3Stat, NfsError } from '../error-map.js';
import type { DsNode, NodeAttrs } from '../datastore/nodes.js';
import { fromSattr, postOp, wccOf } from './attrs.js';
import type { NfsContext } from './context.js';

const COOKIEVERF = new Uint8Array(8);

async function attrsOrUndefined(c: NfsContext, n: DsNode): Promise<NodeAttrs | undefined> {
  try {
    return await c.ds.attrs(n);
  } catch {
    return undefined;
  }
}

export async function lookup(c: NfsContext, a: m.Nfsv3LookupRequest): Promise<m.Nfsv3LookupResponse> {
  const dir = await c.ds.resolve(a.what.dir.data);
  const dirAttrs = await attrsOrUndefined(c, dir);
  try {
    const n = await c.ds.lookup(dir, a.what.name);
    return new m.Nfsv3LookupResponse(
      Nfs3Stat.OK,
      new m.Nfsv3LookupResOk(new st.Nfsv3Fh(c.ds.handle(n)), postOp(await c.ds.attrs(n), c.fsid), postOp(dirAttrs, c.fsid)),
    );
  } catch (err) {
    if (!(err instanceof NfsError)) throw err;
    return new m.Nfsv3LookupResponse(err.stat, undefined, new m.Nfsv3LookupResFail(postOp(dirAttrs, c.fsid)));
  }
}

export async function create(c: NfsContext, a: m.Nfsv3CreateRequest): Promise<m.Nfsv3CreateResponse> {
  const dir = await c.ds.resolve(a.where.dir.data);
  const before = await attrsOrUndefined(c, dir);
  const attrs = a.how.objAttributes ? fromSattr(a.how.objAttributes) : {};
  const n = await c.mut.create(dir, a.where.name, a.how.mode, attrs, a.how.verf);
  return new m.Nfsv3CreateResponse(
    Nfs3Stat.OK,
    new m.Nfsv3CreateResOk(new st.Nfsv3PostOpFh(true, new st.Nfsv3Fh(c.ds.handle(n))), postOp(await c.ds.attrs(n), c.fsid), wccOf(before, await attrsOrUndefined(c, dir), c.fsid)),
  );
}

export async function mkdir(c: NfsContext, a: m.Nfsv3MkdirRequest): Promise<m.Nfsv3MkdirResponse> {
  const dir = await c.ds.resolve(a.where.dir.data);
  const before = await attrsOrUndefined(c, dir);
  const n = await c.mut.mkdir(dir, a.where.name, fromSattr(a.attributes));
  return new m.Nfsv3MkdirResponse(
    Nfs3Stat.OK,
    new m.Nfsv3MkdirResOk(new st.Nfsv3PostOpFh(true, new st.Nfsv3Fh(c.ds.handle(n))), postOp(await c.ds.attrs(n), c.fsid), wccOf(before, await attrsOrUndefined(c, dir), c.fsid)),
  );
}

export async function remove(c: NfsContext, a: m.Nfsv3RemoveRequest, rmdir: boolean): Promise<m.Nfsv3RemoveResponse | m.Nfsv3RmdirResponse> {
  const dir = await c.ds.resolve(a.object.dir.data);
  const before = await attrsOrUndefined(c, dir);
  await c.mut.remove(dir, a.object.name, rmdir);
  const wcc = wccOf(before, await attrsOrUndefined(c, dir), c.fsid);
  return rmdir ? new m.Nfsv3RmdirResponse(Nfs3Stat.OK, new m.Nfsv3RmdirResOk(wcc)) : new m.Nfsv3RemoveResponse(Nfs3Stat.OK, new m.Nfsv3RemoveResOk(wcc));
}

export async function rename(c: NfsContext, a: m.Nfsv3RenameRequest): Promise<m.Nfsv3RenameResponse> {
  const from = await c.ds.resolve(a.from.dir.data);
  const to = await c.ds.resolve(a.to.dir.data);
  const fromBefore = await attrsOrUndefined(c, from);
  const toBefore = await attrsOrUndefined(c, to);
  await c.mut.rename(from, a.from.name, to, a.to.name);
  return new m.Nfsv3RenameResponse(
    Nfs3Stat.OK,
    new m.Nfsv3RenameResOk(wccOf(fromBefore, await attrsOrUndefined(c, from), c.fsid), wccOf(toBefore, await attrsOrUndefined(c, to), c.fsid)),
  );
}

interface Listed {
  node: DsNode;
  name: string;
  cookie: bigint;
}

/** '.', '..', then the entries; cookie of entry i is i + 1. */
async function entries(c: NfsContext, dir: DsNode, cookie: bigint): Promise<Listed[]> {
  const all: Listed[] = [
    { node: dir, name: '.', cookie: 1n },
    { node: c.ds.parent(dir), name: '..', cookie: 2n },
    ...(await c.ds.list(dir)).map((node, i) => ({ node, name: node.name, cookie: BigInt(i + 3) })),
  ];
  if (cookie > BigInt(all.length)) throw new NfsError(Nfs3Stat.BAD_COOKIE, 'cookie past the end of the directory');
  return all.slice(Number(cookie));
}

const xdrLen = (name: string): number => (Buffer.byteLength(name) + 3) & ~3;

export async function readdir(c: NfsContext, a: m.Nfsv3ReaddirRequest): Promise<m.Nfsv3ReaddirResponse> {
  const dir = await c.ds.resolve(a.dir.data);
  const dirAttrs = await c.ds.attrs(dir);
  if (!dirAttrs.dir) throw new NfsError(Nfs3Stat.NOTDIR, 'not a directory');
  const list = await entries(c, dir, a.cookie);
  let used = 4 + 4 + 84 + 8 + 8;
  const take: Listed[] = [];
  for (const e of list) {
    const size = 4 + 8 + 4 + xdrLen(e.name) + 8;
    if (used + size > a.count) break;
    used += size;
    take.push(e);
  }
  if (take.length === 0 && list.length > 0) throw new NfsError(Nfs3Stat.TOOSMALL, 'count too small for one entry');
  let chain: st.Nfsv3Entry | undefined;
  for (let i = take.length - 1; i >= 0; i--) chain = new st.Nfsv3Entry(take[i]!.node.id, take[i]!.name, take[i]!.cookie, chain);
  return new m.Nfsv3ReaddirResponse(
    Nfs3Stat.OK,
    new m.Nfsv3ReaddirResOk(postOp(dirAttrs, c.fsid), COOKIEVERF, new st.Nfsv3DirList(take.length === list.length, chain)),
  );
}

export async function readdirplus(c: NfsContext, a: m.Nfsv3ReaddirplusRequest): Promise<m.Nfsv3ReaddirplusResponse> {
  const dir = await c.ds.resolve(a.dir.data);
  const dirAttrs = await c.ds.attrs(dir);
  if (!dirAttrs.dir) throw new NfsError(Nfs3Stat.NOTDIR, 'not a directory');
  const list = await entries(c, dir, a.cookie);
  let used = 4 + 4 + 84 + 8 + 8;
  const take: Array<Listed & { attrs: NodeAttrs | undefined }> = [];
  for (const e of list) {
    const size = 4 + 8 + 4 + xdrLen(e.name) + 8 + 4 + 84 + 4 + 4 + 24;
    if (used + size > a.maxcount) break;
    used += size;
    take.push({ ...e, attrs: await attrsOrUndefined(c, e.node) });
  }
  if (take.length === 0 && list.length > 0) throw new NfsError(Nfs3Stat.TOOSMALL, 'maxcount too small for one entry');
  let chain: st.Nfsv3EntryPlus | undefined;
  for (let i = take.length - 1; i >= 0; i--) {
    const e = take[i]!;
    chain = new st.Nfsv3EntryPlus(e.node.id, e.name, e.cookie, postOp(e.attrs, c.fsid), new st.Nfsv3PostOpFh(true, new st.Nfsv3Fh(c.ds.handle(e.node))), chain);
  }
  return new m.Nfsv3ReaddirplusResponse(
    Nfs3Stat.OK,
    new m.Nfsv3ReaddirplusResOk(postOp(dirAttrs, c.fsid), COOKIEVERF, new st.Nfsv3DirListPlus(take.length === list.length, chain)),
  );
}
