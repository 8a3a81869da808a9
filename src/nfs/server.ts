/**
 * NfsServer: the NFSv3 datastore. One or more TCP listeners serve MOUNT v3 and NFS v3 (the same
 * port for both); an optional portmapper listener (port 111 for ESXi, QEMU and libnfs, which all
 * ask it) tells clients that port. The tree it publishes is described in datastore/datastore.ts.
 *
 * Lifecycle: listen()/listenPortmap() may be called several times; close() stops accepting, lets
 * connections answer what is in flight, closes its handles of published disks; destroy() cuts at once.
 */
import type { CatalogView } from '../exports/catalog.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { Datastore } from './datastore/datastore.js';
import { FileOps } from './datastore/file-ops.js';
import { HandleCodec } from './datastore/handles.js';
import { Mutations } from './datastore/mutations.js';
import { MountProgram } from './mount.js';
import { Nfs3Program } from './nfs3/program.js';
import { exportPolicy } from './policy.js';
import { PortmapProgram, type PortMapping } from './portmap.js';
import { IPPROTO_TCP, IPPROTO_UDP, PROG_MOUNT, PROG_NFS, PROG_PORTMAP } from './rpc/constants.js';
import { BufferPool } from '../util/buffer-pool.js';
import { RpcServer } from './rpc/server.js';
import { recordLimit } from './rpc/constants.js';
import { MAX_IO, MAX_IO_LIMIT, MIN_IO } from './nfs3/context.js';
import { ByteBudget } from '../util/byte-budget.js';
import { LogLimiter } from '../util/log-limiter.js';
import { ReboundError } from '../errors.js';
import type { XenFormat } from './xen-names.js';

export interface NfsServerOptions {
  /** The catalog as published on NFS. */
  catalog: CatalogView;
  /** Directory for the datastore's own state (the handle secret); usually DATA/nfs. */
  stateDir: string;
  log?: Logger;
  /** Refuse every change (NFS3ERR_ROFS). Default false. */
  readOnly?: boolean;
  /** Client addresses or subnets allowed to mount; empty = everyone. */
  allowedClients?: readonly string[];
  /** MOUNT and NFS calls only from source ports below 1024 (knfsd's `secure`). Default false. */
  requirePrivilegedPort?: boolean;
  /** Largest READ/WRITE payload (FSINFO rtmax/wtmax); the RPC record cap follows it. Default 1 MiB. */
  maxIoSize?: number;
  /** The daemon's total of payload bytes in flight, shared with NBD (default: 512 MiB of its own). */
  budget?: ByteBudget;
  /** Calls processed concurrently per connection (default 128). */
  maxInflight?: number;
  /** Daemon start time: the write verifier is derived from it. */
  startedAt?: Date;
  /** The XenServer SR folders under /xen (xen-names.ts): `.raw` VDIs (default), fixed `.vhd`, or off. */
  xenFormat?: XenFormat;
}

export class NfsServer {
  readonly datastore: Datastore;
  readonly #rpc: RpcServer;
  readonly #portmapper: RpcServer;
  readonly #ops: FileOps;
  readonly #mount: MountProgram;
  readonly #log: Logger;
  readonly #nfsPorts: number[] = [];
  readonly endpoints: { nfs: string[]; portmap: string[] } = { nfs: [], portmap: [] };
  #portmapPort = 0;
  readonly #unsubscribe: () => void;

  constructor(opts: NfsServerOptions) {
    this.#log = opts.log ?? silentLogger;
    const codec = HandleCodec.open(opts.stateDir);
    this.datastore = new Datastore({ catalog: opts.catalog, codec, log: this.#log, xenFormat: opts.xenFormat ?? 'raw' });
    this.#ops = new FileOps(this.datastore, this.#log, (opts.startedAt ?? new Date()).getTime());
    const maxIo = opts.maxIoSize ?? MAX_IO;
    if (!Number.isSafeInteger(maxIo) || maxIo < MIN_IO || maxIo > MAX_IO_LIMIT || maxIo % 4096 !== 0) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `nfsMaxIoSize must be a multiple of 4K from 4K to 16M, got ${maxIo}`);
    }
    const limiter = new LogLimiter();
    const policy = exportPolicy(opts.allowedClients ?? [], opts.readOnly ?? false, opts.requirePrivilegedPort ?? false);
    const ctx = {
      ds: this.datastore,
      ops: this.#ops,
      mut: new Mutations(this.datastore, this.#ops),
      fsid: BigInt(codec.dsid),
      statfsPath: opts.stateDir,
      log: this.#log,
      buffers: new BufferPool(),
      maxIo,
      budget: opts.budget ?? new ByteBudget(512 * 1024 * 1024),
      limiter,
    };
    this.#mount = new MountProgram(this.datastore, policy, this.#log, limiter);
    this.#rpc = new RpcServer({ label: 'NFS', log: this.#log, maxInflight: opts.maxInflight, maxRecordBytes: recordLimit(maxIo), limiter });
    this.#rpc.addProgram(new Nfs3Program(ctx, policy));
    this.#rpc.addProgram(this.#mount);
    this.#portmapper = new RpcServer({ label: 'portmapper', log: this.#log });
    this.#portmapper.addProgram(new PortmapProgram(() => this.mappings()));
    this.#unsubscribe = opts.catalog.onChange((e, what) => {
      if (what === 'removed') void this.#ops.release(e);
    });
  }

  /** MOUNT v3 and NFS v3 on TCP. Port 0 picks a free port. */
  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const a = await this.#rpc.listen(host, port);
    this.#nfsPorts.push(a.port);
    this.endpoints.nfs.push(fmt(a));
    return a;
  }

  /** PORTMAP v2 and rpcbind v3/v4 on TCP and UDP, same port (clients expect 111; `rpcinfo -p` uses UDP). */
  async listenPortmap(host: string, port: number): Promise<{ host: string; port: number }> {
    const a = await this.#portmapper.listen(host, port);
    await this.#portmapper.listenUdp(host, a.port);
    this.#portmapPort ||= a.port;
    this.endpoints.portmap.push(fmt(a));
    return a;
  }

  /** What the portmapper answers. */
  mappings(): PortMapping[] {
    const out: PortMapping[] = [];
    if (this.#portmapPort) {
      for (const vers of [4, 3, 2]) {
        out.push({ prog: PROG_PORTMAP, vers, prot: IPPROTO_TCP, port: this.#portmapPort });
        out.push({ prog: PROG_PORTMAP, vers, prot: IPPROTO_UDP, port: this.#portmapPort });
      }
    }
    const port = this.#nfsPorts[0];
    if (port) {
      out.push({ prog: PROG_MOUNT, vers: 3, prot: IPPROTO_TCP, port });
      out.push({ prog: PROG_NFS, vers: 3, prot: IPPROTO_TCP, port });
    }
    return out;
  }

  get mounts(): Array<{ host: string; path: string }> {
    return this.#mount.mounts;
  }

  get connectionCount(): number {
    return this.#rpc.connectionCount;
  }

  async close(timeoutMs = 10_000): Promise<void> {
    await Promise.all([this.#rpc.close(timeoutMs), this.#portmapper.close(timeoutMs)]);
    this.#unsubscribe();
    await this.#ops.close();
    this.datastore.close();
  }

  destroy(): void {
    this.#rpc.destroy();
    this.#portmapper.destroy();
    this.#unsubscribe();
    void this.#ops.close();
    this.datastore.close();
  }
}

function fmt(a: { host: string; port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
