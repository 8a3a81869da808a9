/**
 * The NFS v3 program (RFC 1813): decodes arguments with json-pack's Nfsv3Decoder, runs the
 * procedure, encodes the result with Nfsv3Encoder (READ is hand-encoded, see procs-files.ts).
 *
 *  - Every procedure but NULL needs AUTH_SYS (anything else: AUTH_ERROR/AUTH_TOOWEAK), a client
 *    address the export allows (otherwise NFS3ERR_ACCES) and, when the export requires privileged
 *    ports, a source port below 1024 (otherwise NFS3ERR_PERM, as knfsd answers without `insecure`). uid 0 is root: no squashing, since ESXi
 *    must be root on a datastore. The claimed uid decides nothing on disk: what clients create
 *    belongs to the service ids, SETATTR uid/gid is checked (only uid 0 may) and dropped, and
 *    regular files never get execute or set-id bits (datastore/ownership.ts).
 *  - On a read-only export the procedures that change anything answer NFS3ERR_ROFS.
 *  - READLINK, SYMLINK, MKNOD and LINK answer NFS3ERR_NOTSUPP; unknown procedure numbers PROC_UNAVAIL.
 *  - Any failure becomes the procedure's own failure body (with empty attributes) and the status
 *    from error-map.ts; the connection carries on.
 */
import { Nfsv3Decoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/Nfsv3Decoder.js';
import { Nfsv3Encoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/Nfsv3Encoder.js';
import * as m from '@jsonjoy.com/json-pack/lib/nfs/v3/messages.js';
import { errorText } from '../../errors.js';
import { Nfs3Stat, toNfsStat, type Nfs3StatValue } from '../error-map.js';
import { AuthFlavor, AuthStat, PROG_NFS } from '../rpc/constants.js';
import { success, type RpcCall, type RpcProgram, type RpcResult } from '../rpc/connection.js';
import { NO_ATTRS, NO_WCC } from './attrs.js';
import type { NfsContext, RawReply } from './context.js';
import * as dirs from './procs-dirs.js';
import * as files from './procs-files.js';
import { portAllowed } from '../policy.js';

export const Proc = {
  NULL: 0, GETATTR: 1, SETATTR: 2, LOOKUP: 3, ACCESS: 4, READLINK: 5, READ: 6, WRITE: 7, CREATE: 8, MKDIR: 9,
  SYMLINK: 10, MKNOD: 11, REMOVE: 12, RMDIR: 13, RENAME: 14, LINK: 15, READDIR: 16, READDIRPLUS: 17,
  FSSTAT: 18, FSINFO: 19, PATHCONF: 20, COMMIT: 21,
} as const;

export const PROC_NAMES = Object.fromEntries(Object.entries(Proc).map(([k, v]) => [v, k])) as Record<number, string>;

const MODIFYING = new Set<number>([Proc.SETATTR, Proc.WRITE, Proc.CREATE, Proc.MKDIR, Proc.SYMLINK, Proc.MKNOD, Proc.REMOVE, Proc.RMDIR, Proc.RENAME, Proc.LINK]);
const UNSUPPORTED = new Set<number>([Proc.READLINK, Proc.SYMLINK, Proc.MKNOD, Proc.LINK]);

export interface ExportPolicy {
  readOnly: boolean;
  /** Whether a client address may use the export. */
  allows(address: string): boolean;
  /** Calls must come from a source port below 1024 (knfsd's `secure`). */
  requirePrivilegedPort: boolean;
}

export class Nfs3Program implements RpcProgram {
  readonly prog = PROG_NFS;
  readonly name = 'nfs';
  readonly low = 3;
  readonly high = 3;
  readonly #c: NfsContext;
  readonly #policy: ExportPolicy;
  readonly #decoder = new Nfsv3Decoder();
  readonly #encoder = new Nfsv3Encoder();

  constructor(ctx: NfsContext, policy: ExportPolicy) {
    this.#c = ctx;
    this.#policy = policy;
  }

  call(call: RpcCall): RpcResult | Promise<RpcResult> {
    const proc = call.proc;
    if (proc === Proc.NULL) return success();
    if (proc > Proc.COMMIT) return { kind: 'proc-unavail' };
    if (call.credFlavor !== AuthFlavor.AUTH_SYS) return { kind: 'auth-error', authStat: AuthStat.AUTH_TOOWEAK };
    if (!call.auth) return { kind: 'auth-error', authStat: AuthStat.AUTH_BADCRED };
    if (!this.#policy.allows(call.peer.address)) {
      this.#c.limiter.warn(this.#c.log, 'nfs-client-not-allowed', call.peer.address, 'NFS call refused: client not allowed', {
        peer: call.peer.address,
        proc: PROC_NAMES[proc],
      });
      return this.#fail(proc, Nfs3Stat.ACCES);
    }
    if (!portAllowed(this.#policy, call.peer)) {
      this.#c.limiter.warn(this.#c.log, 'nfs-insecure-port', call.peer.address, 'NFS call refused: source port is not privileged', {
        peer: `${call.peer.address}:${call.peer.port}`,
        proc: PROC_NAMES[proc],
        setting: 'nfsRequirePrivilegedPort',
      });
      return this.#fail(proc, Nfs3Stat.PERM);
    }
    if (UNSUPPORTED.has(proc)) return this.#fail(proc, Nfs3Stat.NOTSUPP);
    if (MODIFYING.has(proc) && this.#policy.readOnly) return this.#fail(proc, Nfs3Stat.ROFS);
    if (!call.params) return { kind: 'garbage-args' };
    let args;
    try {
      args = this.#decoder.decodeMessage(call.params, proc as never, true);
    } catch {
      args = undefined;
    }
    // json-pack's Reader does not stop at the end of a slice: a short argument list reads past it.
    if (!args || call.params.size() < 0) return { kind: 'garbage-args' };
    return this.#run(proc, args, call);
  }

  async #run(proc: number, args: unknown, call: RpcCall): Promise<RpcResult> {
    const c = this.#c;
    try {
      const res = await this.#dispatch(proc, args, call);
      if ('raw' in res) return { kind: 'success', body: res.body, sent: res.sent };
      return success(this.#encoder.encodeMessage(res, proc as never, false));
    } catch (err) {
      const stat = toNfsStat(err);
      const fields = { proc: PROC_NAMES[proc], stat, err: errorText(err), peer: call.peer.address };
      if (stat === Nfs3Stat.IO || stat === Nfs3Stat.SERVERFAULT) c.log.warn('NFS request failed', fields);
      else c.log.debug('NFS request refused', fields);
      return this.#fail(proc, stat);
    }
  }

  #dispatch(proc: number, a: unknown, call: RpcCall): Promise<m.Nfsv3Response | RawReply> {
    const c = this.#c;
    switch (proc) {
      case Proc.GETATTR: return files.getattr(c, a as m.Nfsv3GetattrRequest);
      case Proc.SETATTR: return files.setattr(c, a as m.Nfsv3SetattrRequest, call.auth);
      case Proc.LOOKUP: return dirs.lookup(c, a as m.Nfsv3LookupRequest);
      case Proc.ACCESS: return files.access(c, a as m.Nfsv3AccessRequest, this.#policy.readOnly);
      case Proc.READ: return files.read(c, a as m.Nfsv3ReadRequest, call.signal);
      case Proc.WRITE: return files.write(c, a as m.Nfsv3WriteRequest, call.signal);
      case Proc.CREATE: return dirs.create(c, a as m.Nfsv3CreateRequest);
      case Proc.MKDIR: return dirs.mkdir(c, a as m.Nfsv3MkdirRequest);
      case Proc.REMOVE: return dirs.remove(c, a as m.Nfsv3RemoveRequest, false);
      case Proc.RMDIR: return dirs.remove(c, a as m.Nfsv3RmdirRequest, true);
      case Proc.RENAME: return dirs.rename(c, a as m.Nfsv3RenameRequest);
      case Proc.READDIR: return dirs.readdir(c, a as m.Nfsv3ReaddirRequest);
      case Proc.READDIRPLUS: return dirs.readdirplus(c, a as m.Nfsv3ReaddirplusRequest);
      case Proc.FSSTAT: return files.fsstat(c, a as m.Nfsv3FsstatRequest);
      case Proc.FSINFO: return files.fsinfo(c, a as m.Nfsv3FsinfoRequest);
      case Proc.PATHCONF: return files.pathconf(c, a as m.Nfsv3PathconfRequest);
      case Proc.COMMIT: return files.commit(c, a as m.Nfsv3CommitRequest);
      default: return Promise.resolve(failure(proc, Nfs3Stat.NOTSUPP));
    }
  }

  #fail(proc: number, stat: Nfs3StatValue): RpcResult {
    return success(this.#encoder.encodeMessage(failure(proc, stat), proc as never, false));
  }
}

/** The failure body of a procedure: its status and empty attributes. */
export function failure(proc: number, stat: Nfs3StatValue): m.Nfsv3Response {
  switch (proc) {
    case Proc.GETATTR: return new m.Nfsv3GetattrResponse(stat);
    case Proc.SETATTR: return new m.Nfsv3SetattrResponse(stat, undefined, new m.Nfsv3SetattrResFail(NO_WCC));
    case Proc.LOOKUP: return new m.Nfsv3LookupResponse(stat, undefined, new m.Nfsv3LookupResFail(NO_ATTRS));
    case Proc.ACCESS: return new m.Nfsv3AccessResponse(stat, undefined, new m.Nfsv3AccessResFail(NO_ATTRS));
    case Proc.READLINK: return new m.Nfsv3ReadlinkResponse(stat, undefined, new m.Nfsv3ReadlinkResFail(NO_ATTRS));
    case Proc.READ: return new m.Nfsv3ReadResponse(stat, undefined, new m.Nfsv3ReadResFail(NO_ATTRS));
    case Proc.WRITE: return new m.Nfsv3WriteResponse(stat, undefined, new m.Nfsv3WriteResFail(NO_WCC));
    case Proc.CREATE: return new m.Nfsv3CreateResponse(stat, undefined, new m.Nfsv3CreateResFail(NO_WCC));
    case Proc.MKDIR: return new m.Nfsv3MkdirResponse(stat, undefined, new m.Nfsv3MkdirResFail(NO_WCC));
    case Proc.SYMLINK: return new m.Nfsv3SymlinkResponse(stat, undefined, new m.Nfsv3SymlinkResFail(NO_WCC));
    case Proc.MKNOD: return new m.Nfsv3MknodResponse(stat, undefined, new m.Nfsv3MknodResFail(NO_WCC));
    case Proc.REMOVE: return new m.Nfsv3RemoveResponse(stat, undefined, new m.Nfsv3RemoveResFail(NO_WCC));
    case Proc.RMDIR: return new m.Nfsv3RmdirResponse(stat, undefined, new m.Nfsv3RmdirResFail(NO_WCC));
    case Proc.RENAME: return new m.Nfsv3RenameResponse(stat, undefined, new m.Nfsv3RenameResFail(NO_WCC, NO_WCC));
    case Proc.LINK: return new m.Nfsv3LinkResponse(stat, undefined, new m.Nfsv3LinkResFail(NO_ATTRS, NO_WCC));
    case Proc.READDIR: return new m.Nfsv3ReaddirResponse(stat, undefined, new m.Nfsv3ReaddirResFail(NO_ATTRS));
    case Proc.READDIRPLUS: return new m.Nfsv3ReaddirplusResponse(stat, undefined, new m.Nfsv3ReaddirplusResFail(NO_ATTRS));
    case Proc.FSSTAT: return new m.Nfsv3FsstatResponse(stat, undefined, new m.Nfsv3FsstatResFail(NO_ATTRS));
    case Proc.FSINFO: return new m.Nfsv3FsinfoResponse(stat, undefined, new m.Nfsv3FsinfoResFail(NO_ATTRS));
    case Proc.PATHCONF: return new m.Nfsv3PathconfResponse(stat, undefined, new m.Nfsv3PathconfResFail(NO_ATTRS));
    case Proc.COMMIT: return new m.Nfsv3CommitResponse(stat, undefined, new m.Nfsv3CommitResFail(NO_WCC));
    default: throw new RangeError(`no NFSv3 procedure ${proc}`);
  }
}
