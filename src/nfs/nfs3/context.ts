/** What the NFSv3 procedures work with. */
import type { Datastore } from '../datastore/datastore.js';
import type { FileOps } from '../datastore/file-ops.js';
import type { Mutations } from '../datastore/mutations.js';
import type { Logger } from '../../util/log.js';
import type { BufferPool } from '../../util/buffer-pool.js';
import type { ByteBudget } from '../../util/byte-budget.js';
import type { LogLimiter } from '../../util/log-limiter.js';

export interface NfsContext {
  ds: Datastore;
  ops: FileOps;
  mut: Mutations;
  fsid: bigint;
  /** Where FSSTAT's capacity comes from (the filesystem that holds session files). */
  statfsPath: string;
  log: Logger;
  /** Where READ reply buffers come from (returned once written). */
  buffers: BufferPool;
  /** Largest READ/WRITE payload (FSINFO rtmax/wtmax; READs are clamped, WRITEs cut short to it). */
  maxIo: number;
  /** The daemon's total of payload bytes in flight (shared with NBD): READ and WRITE data count. */
  budget: ByteBudget;
  /** Rate limit of refusal log lines. */
  limiter: LogLimiter;
}

/** A reply body encoded by hand (READ); `sent` runs once the socket is done with it. */
export interface RawReply {
  raw: true;
  body: Uint8Array[];
  sent: () => void;
}

/** Default largest READ/WRITE payload offered in FSINFO (what libnfs, QEMU and ESXi use at most). */
export const MAX_IO = 1024 * 1024;
/** Smallest and largest nfsMaxIoSize: a page, and what the RPC record cap still holds sensibly. */
export const MIN_IO = 4096;
export const MAX_IO_LIMIT = 16 * 1024 * 1024;
