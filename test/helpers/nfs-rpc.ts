/**
 * A small ONC RPC client for tests: raw calls (any program, procedure, credential, even broken
 * records), and typed NFS v3 / MOUNT v3 calls encoded and decoded with json-pack's codecs. Several
 * calls may be in flight at once; replies are matched by XID and `order` records their arrival.
 */
import net from 'node:net';
import { Nfsv3Decoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/Nfsv3Decoder.js';
import { Nfsv3Encoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/Nfsv3Encoder.js';
import * as m from '@jsonjoy.com/json-pack/lib/nfs/v3/messages.js';
import * as st from '@jsonjoy.com/json-pack/lib/nfs/v3/structs.js';
import { MountDecoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/MountDecoder.js';
import { MountEncoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/MountEncoder.js';
import * as mm from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/messages.js';
import { RmRecordDecoder } from '@jsonjoy.com/json-pack/lib/rm/RmRecordDecoder.js';
import { RpcMessageDecoder } from '@jsonjoy.com/json-pack/lib/rpc/RpcMessageDecoder.js';
import { RpcAcceptedReplyMessage, RpcRejectedReplyMessage } from '@jsonjoy.com/json-pack/lib/rpc/messages.js';

export { m, st, mm };
export const NFS = 100003;
export const MOUNT = 100005;
export const PORTMAP = 100000;

export type Reply =
  | { kind: 'accepted'; stat: number; body: Buffer; xid: number }
  | { kind: 'denied'; rejectStat: number; authStat?: number; xid: number };

/** AUTH_SYS credential body: stamp, machine name, uid, gid, no aux gids. */
export function authSys(uid = 0, gid = 0, machine = 'rebound-test'): Buffer {
  const name = Buffer.from(machine);
  const pad = (4 - (name.length % 4)) % 4;
  const b = Buffer.alloc(4 + 4 + name.length + pad + 12);
  b.writeUInt32BE(1, 0);
  b.writeUInt32BE(name.length, 4);
  name.copy(b, 8);
  b.writeUInt32BE(uid, 8 + name.length + pad);
  b.writeUInt32BE(gid, 12 + name.length + pad);
  return b;
}

export function encodeCall(xid: number, prog: number, vers: number, proc: number, args: Uint8Array, cred = { flavor: 1, body: authSys() }): Buffer {
  const credPad = (4 - (cred.body.length % 4)) % 4;
  const h = Buffer.alloc(24 + 8 + cred.body.length + credPad + 8);
  h.writeUInt32BE(xid, 0);
  h.writeUInt32BE(0, 4);
  h.writeUInt32BE(2, 8);
  h.writeUInt32BE(prog, 12);
  h.writeUInt32BE(vers, 16);
  h.writeUInt32BE(proc, 20);
  h.writeUInt32BE(cred.flavor, 24);
  h.writeUInt32BE(cred.body.length, 28);
  cred.body.copy(h, 32);
  return Buffer.concat([h, args]);
}

/** One record-marked record (optionally split into fragments of `fragment` bytes). */
export function record(payload: Buffer, fragment = payload.length || 1): Buffer {
  const parts: Buffer[] = [];
  for (let off = 0; off < payload.length || (off === 0 && payload.length === 0); off += fragment) {
    const piece = payload.subarray(off, off + fragment);
    const last = off + fragment >= payload.length;
    const mark = Buffer.alloc(4);
    mark.writeUInt32BE(((last ? 0x80000000 : 0) | piece.length) >>> 0);
    parts.push(mark, piece);
    if (payload.length === 0) break;
  }
  return Buffer.concat(parts);
}

export class RpcTestClient {
  readonly socket: net.Socket;
  readonly order: number[] = [];
  readonly #rm = new RmRecordDecoder();
  readonly #rpc = new RpcMessageDecoder();
  readonly #pending = new Map<number, (r: Reply) => void>();
  readonly #nfsEnc = new Nfsv3Encoder();
  readonly #nfsDec = new Nfsv3Decoder();
  readonly #mountEnc = new MountEncoder();
  readonly #mountDec = new MountDecoder();
  #xid = 1000;
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d) => {
      this.#rm.push(d);
      for (let rec = this.#rm.readRecord(); rec; rec = this.#rm.readRecord()) {
        const msg = this.#rpc.decodeMessage(rec);
        if (msg instanceof RpcAcceptedReplyMessage) {
          const body = msg.results ? Buffer.from(msg.results.subarray(0, msg.results.size())) : Buffer.alloc(0);
          this.#settle({ kind: 'accepted', stat: msg.stat, body, xid: msg.xid });
        } else if (msg instanceof RpcRejectedReplyMessage) {
          this.#settle({ kind: 'denied', rejectStat: msg.stat, authStat: msg.authStat, xid: msg.xid });
        }
      }
    });
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => undefined);
  }

  /** `localPort`: bind the client's end to this source port (below 1024 needs root). */
  static connect(port: number, host = '127.0.0.1', localPort?: number): Promise<RpcTestClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host, ...(localPort !== undefined ? { localPort, localAddress: host } : {}) }, () => resolve(new RpcTestClient(s)));
      s.once('error', reject);
    });
  }

  #settle(r: Reply): void {
    this.order.push(r.xid);
    const p = this.#pending.get(r.xid);
    this.#pending.delete(r.xid);
    p?.(r);
  }

  nextXid(): number {
    return ++this.#xid;
  }

  /** Sends a raw call and resolves with its reply. */
  call(prog: number, vers: number, proc: number, args: Uint8Array = Buffer.alloc(0), opts: { cred?: { flavor: number; body: Buffer }; fragment?: number; xid?: number } = {}): Promise<Reply> {
    const xid = opts.xid ?? this.nextXid();
    const p = new Promise<Reply>((resolve) => this.#pending.set(xid, resolve));
    this.socket.write(record(encodeCall(xid, prog, vers, proc, args, opts.cred), opts.fragment));
    return p;
  }

  /** Waits for the reply to an XID sent by hand. */
  reply(xid: number): Promise<Reply> {
    return new Promise<Reply>((resolve) => this.#pending.set(xid, resolve));
  }

  /** The credential of the typed NFS calls (default AUTH_SYS uid 0, gid 0). */
  cred: { flavor: number; body: Buffer } | undefined;

  async nfs<T = m.Nfsv3Response>(proc: number, req: m.Nfsv3Request): Promise<T> {
    const r = await this.call(NFS, 3, proc, Buffer.from(this.#nfsEnc.encodeMessage(req, proc as never, true)), { cred: this.cred });
    if (r.kind !== 'accepted' || r.stat !== 0) throw new Error(`NFS call ${proc} not accepted: ${JSON.stringify(r)}`);
    return this.#nfsDec.decodeMessage(readerOf(r.body), proc as never, false) as T;
  }

  async mount(dirpath: string): Promise<{ status: number; fh?: Buffer }> {
    const args = Buffer.from(this.#mountEnc.encodeMessage(new mm.MountMntRequest(dirpath), 1 as never, true));
    const r = await this.call(MOUNT, 3, 1, args);
    if (r.kind !== 'accepted' || r.stat !== 0) throw new Error(`MNT not accepted: ${JSON.stringify(r)}`);
    const res = this.#mountDec.decodeMessage(readerOf(r.body), 1 as never, false) as mm.MountMntResponse;
    return { status: res.status, fh: res.mountinfo ? Buffer.from(res.mountinfo.fhandle.data.subarray(0, res.mountinfo.fhandle.data.size())) : undefined };
  }

  /** Any MOUNT v3 procedure; resolves with the decoded reply (undefined for void replies). */
  async mountCall(proc: number, req?: mm.MountRequest): Promise<mm.MountMessage | undefined> {
    const args = req ? Buffer.from(this.#mountEnc.encodeMessage(req, proc as never, true)) : Buffer.alloc(0);
    const r = await this.call(MOUNT, 3, proc, args);
    if (r.kind !== 'accepted' || r.stat !== 0) throw new Error(`MOUNT ${proc} not accepted: ${JSON.stringify(r)}`);
    return r.body.length ? this.#mountDec.decodeMessage(readerOf(r.body), proc as never, false) : undefined;
  }

  // ---- typed NFS helpers ----
  fh(b: Uint8Array): st.Nfsv3Fh {
    return new st.Nfsv3Fh(b);
  }

  async lookup(dir: Uint8Array, name: string): Promise<m.Nfsv3LookupResponse> {
    return this.nfs(3, new m.Nfsv3LookupRequest(new st.Nfsv3DirOpArgs(this.fh(dir), name)));
  }

  async lookupPath(root: Uint8Array, p: string): Promise<Buffer> {
    let fh = Buffer.from(root);
    for (const part of p.split('/').filter(Boolean)) {
      const r = await this.lookup(fh, part);
      if (r.status !== 0) throw new Error(`LOOKUP ${part} failed: ${r.status}`);
      fh = Buffer.from(r.resok!.object.data);
    }
    return fh;
  }

  getattr(fh: Uint8Array): Promise<m.Nfsv3GetattrResponse> {
    return this.nfs(1, new m.Nfsv3GetattrRequest(this.fh(fh)));
  }

  read(fh: Uint8Array, offset: number, count: number): Promise<m.Nfsv3ReadResponse> {
    return this.nfs(6, new m.Nfsv3ReadRequest(this.fh(fh), BigInt(offset), count));
  }

  write(fh: Uint8Array, offset: number, data: Uint8Array, stable = 0): Promise<m.Nfsv3WriteResponse> {
    return this.nfs(7, new m.Nfsv3WriteRequest(this.fh(fh), BigInt(offset), data.length, stable, data));
  }

  commit(fh: Uint8Array): Promise<m.Nfsv3CommitResponse> {
    return this.nfs(21, new m.Nfsv3CommitRequest(this.fh(fh), 0n, 0));
  }

  create(dir: Uint8Array, name: string, mode = 1, verf?: Uint8Array): Promise<m.Nfsv3CreateResponse> {
    const how = mode === 2 ? new st.Nfsv3CreateHow(2, undefined, verf) : new st.Nfsv3CreateHow(mode, emptySattr());
    return this.nfs(8, new m.Nfsv3CreateRequest(new st.Nfsv3DirOpArgs(this.fh(dir), name), how));
  }

  /** CREATE (UNCHECKED or GUARDED) with the given attributes. */
  createWith(dir: Uint8Array, name: string, attrs: st.Nfsv3Sattr, mode = 1): Promise<m.Nfsv3CreateResponse> {
    return this.nfs(8, new m.Nfsv3CreateRequest(new st.Nfsv3DirOpArgs(this.fh(dir), name), new st.Nfsv3CreateHow(mode, attrs)));
  }

  mkdir(dir: Uint8Array, name: string, attrs: st.Nfsv3Sattr = emptySattr()): Promise<m.Nfsv3MkdirResponse> {
    return this.nfs(9, new m.Nfsv3MkdirRequest(new st.Nfsv3DirOpArgs(this.fh(dir), name), attrs));
  }

  setattr(fh: Uint8Array, attrs: st.Nfsv3Sattr): Promise<m.Nfsv3SetattrResponse> {
    return this.nfs(2, new m.Nfsv3SetattrRequest(this.fh(fh), attrs, new st.Nfsv3SattrGuard(false)));
  }

  remove(dir: Uint8Array, name: string): Promise<m.Nfsv3RemoveResponse> {
    return this.nfs(12, new m.Nfsv3RemoveRequest(new st.Nfsv3DirOpArgs(this.fh(dir), name)));
  }

  rename(fromDir: Uint8Array, from: string, toDir: Uint8Array, to: string): Promise<m.Nfsv3RenameResponse> {
    return this.nfs(14, new m.Nfsv3RenameRequest(new st.Nfsv3DirOpArgs(this.fh(fromDir), from), new st.Nfsv3DirOpArgs(this.fh(toDir), to)));
  }

  readdirplus(dir: Uint8Array, cookie = 0n, maxcount = 65536): Promise<m.Nfsv3ReaddirplusResponse> {
    return this.nfs(17, new m.Nfsv3ReaddirplusRequest(this.fh(dir), cookie, new Uint8Array(8), maxcount, maxcount));
  }

  close(): void {
    this.socket.destroy();
  }
}

export function emptySattr(size?: bigint): st.Nfsv3Sattr {
  return new st.Nfsv3Sattr(
    new st.Nfsv3SetMode(false),
    new st.Nfsv3SetUid(false),
    new st.Nfsv3SetGid(false),
    size === undefined ? new st.Nfsv3SetSize(false) : new st.Nfsv3SetSize(true, size),
    new st.Nfsv3SetAtime(0),
    new st.Nfsv3SetMtime(0),
  );
}

/** sattr3 setting only the given fields. */
export function sattr(a: { mode?: number; uid?: number; gid?: number; size?: bigint }): st.Nfsv3Sattr {
  return new st.Nfsv3Sattr(
    a.mode === undefined ? new st.Nfsv3SetMode(false) : new st.Nfsv3SetMode(true, a.mode),
    a.uid === undefined ? new st.Nfsv3SetUid(false) : new st.Nfsv3SetUid(true, a.uid),
    a.gid === undefined ? new st.Nfsv3SetGid(false) : new st.Nfsv3SetGid(true, a.gid),
    a.size === undefined ? new st.Nfsv3SetSize(false) : new st.Nfsv3SetSize(true, a.size),
    new st.Nfsv3SetAtime(0),
    new st.Nfsv3SetMtime(0),
  );
}

/** A json-pack Reader over bytes, obtained through the record decoder (no direct dependency on @jsonjoy.com/buffers). */
function readerOf(b: Buffer): NonNullable<ReturnType<RmRecordDecoder['readRecord']>> {
  const rm = new RmRecordDecoder();
  rm.push(record(b));
  return rm.readRecord()!;
}

/** Names in a READDIRPLUS reply. */
export function entryNames(r: m.Nfsv3ReaddirplusResponse): string[] {
  const out: string[] = [];
  for (let e = r.resok?.reply.entries; e; e = e.nextentry) out.push(e.name);
  return out;
}
