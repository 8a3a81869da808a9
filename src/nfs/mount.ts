/**
 * MOUNT v3 (RFC 1813 appendix I): NULL, MNT, DUMP, UMNT, UMNTALL, EXPORT.
 *
 * MNT accepts any directory of the datastore, not only "/": QEMU's nfs driver and libnfs mount the
 * directory that holds the file of an nfs:// URL (nfs://host/sessions/vm1/disk0-flat.vmdk mounts
 * /sessions/vm1). EXPORT lists "/" only: libnfs mounts every listed export below the one it
 * mounted, so listing sub-folders would make it mount them too. The mount list (DUMP) is kept in
 * memory; clients such as libnfs never send UMNT, so it is informational.
 */
import { MountDecoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/MountDecoder.js';
import { MountEncoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/MountEncoder.js';
import * as mm from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/messages.js';
import * as ms from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/structs.js';
import { errorText } from '../errors.js';
import type { Logger } from '../util/log.js';
import type { LogLimiter } from '../util/log-limiter.js';
import { portAllowed } from './policy.js';
import type { Datastore } from './datastore/datastore.js';
import { isDir } from './datastore/nodes.js';
import { Nfs3Stat, toNfsStat } from './error-map.js';
import type { ExportPolicy } from './nfs3/program.js';
import { AuthFlavor, PROG_MOUNT } from './rpc/constants.js';
import { success, type RpcCall, type RpcProgram, type RpcResult } from './rpc/connection.js';

const Proc = { NULL: 0, MNT: 1, DUMP: 2, UMNT: 3, UMNTALL: 4, EXPORT: 5 } as const;
const MNT3ERR_NOTDIR = 20;

export class MountProgram implements RpcProgram {
  readonly prog = PROG_MOUNT;
  readonly name = 'mount';
  readonly low = 3;
  readonly high = 3;
  readonly #ds: Datastore;
  readonly #policy: ExportPolicy;
  readonly #log: Logger;
  readonly #limiter: LogLimiter;
  readonly #decoder = new MountDecoder();
  readonly #encoder = new MountEncoder();
  /** "host\0path" of current mounts. */
  readonly #mounts = new Set<string>();

  constructor(ds: Datastore, policy: ExportPolicy, log: Logger, limiter: LogLimiter) {
    this.#ds = ds;
    this.#policy = policy;
    this.#log = log;
    this.#limiter = limiter;
  }

  call(call: RpcCall): RpcResult | Promise<RpcResult> {
    switch (call.proc) {
      case Proc.NULL:
        return success();
      case Proc.MNT:
        return this.#mnt(call);
      case Proc.DUMP: {
        let list: ms.MountBody | undefined;
        for (const m of [...this.#mounts].reverse()) {
          const [host, dir] = m.split('\0') as [string, string];
          list = new ms.MountBody(host, dir, list);
        }
        return success(this.#encoder.encodeMessage(new mm.MountDumpResponse(list), Proc.DUMP as never, false));
      }
      case Proc.UMNT: {
        const req = call.params && (this.#decode(call, Proc.UMNT) as mm.MountUmntRequest | undefined);
        if (!req) return { kind: 'garbage-args' };
        this.#mounts.delete(`${call.peer.address}\0${req.dirpath}`);
        return success();
      }
      case Proc.UMNTALL:
        for (const m of this.#mounts) if (m.startsWith(`${call.peer.address}\0`)) this.#mounts.delete(m);
        return success();
      case Proc.EXPORT:
        return success(this.#encoder.encodeMessage(new mm.MountExportResponse(new ms.MountExportNode('/')), Proc.EXPORT as never, false));
      default:
        return { kind: 'proc-unavail' };
    }
  }

  get mounts(): Array<{ host: string; path: string }> {
    return [...this.#mounts].map((m) => {
      const [host, path] = m.split('\0') as [string, string];
      return { host, path };
    });
  }

  #decode(call: RpcCall, proc: number): unknown {
    try {
      const msg = this.#decoder.decodeMessage(call.params!, proc as never, true);
      return call.params!.size() < 0 ? undefined : msg; // read past the arguments: garbage
    } catch {
      return undefined;
    }
  }

  async #mnt(call: RpcCall): Promise<RpcResult> {
    const req = call.params && (this.#decode(call, Proc.MNT) as mm.MountMntRequest | undefined);
    if (!req) return { kind: 'garbage-args' };
    const reply = (status: number, fh?: Buffer): RpcResult =>
      success(
        this.#encoder.encodeMessage(
          new mm.MountMntResponse(status, fh ? new mm.MountMntResOk(new ms.MountFhandle3({ uint8: fh } as never), [AuthFlavor.AUTH_SYS]) : undefined),
          Proc.MNT as never,
          false,
        ),
      );
    if (!this.#policy.allows(call.peer.address)) {
      this.#limiter.warn(this.#log, 'nfs-mount-not-allowed', call.peer.address, 'mount refused: client not allowed', { peer: call.peer.address, path: req.dirpath });
      return reply(Nfs3Stat.ACCES);
    }
    // mountd answers MNT3ERR_ACCES to a mount from a port >= 1024 of an export without `insecure`.
    if (!portAllowed(this.#policy, call.peer)) {
      this.#limiter.warn(this.#log, 'nfs-insecure-port', call.peer.address, 'mount refused: source port is not privileged', {
        peer: `${call.peer.address}:${call.peer.port}`,
        path: req.dirpath,
        setting: 'nfsRequirePrivilegedPort',
      });
      return reply(Nfs3Stat.ACCES);
    }
    try {
      const n = await this.#ds.walk(req.dirpath);
      if (!isDir(n)) return reply(MNT3ERR_NOTDIR);
      this.#mounts.add(`${call.peer.address}\0${req.dirpath}`);
      this.#log.info('client mounted', { peer: call.peer.address, path: req.dirpath });
      return reply(0, this.#ds.handle(n));
    } catch (err) {
      const stat = toNfsStat(err);
      this.#log.debug('mount failed', { path: req.dirpath, err: errorText(err) });
      // MNT3 status values are the NFS3 ones for these cases (NOENT, ACCES, NOTDIR, IO, ...).
      return reply(stat === Nfs3Stat.STALE || stat === Nfs3Stat.BADHANDLE ? Nfs3Stat.NOENT : stat === Nfs3Stat.SERVERFAULT ? 10006 : stat);
    }
  }
}
