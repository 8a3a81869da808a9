/** What the NFSv3 procedures work with. */
import type { Datastore } from '../datastore/datastore.js';
import type { FileOps } from '../datastore/file-ops.js';
import type { Mutations } from '../datastore/mutations.js';
import type { Logger } from '../../util/log.js';
import type { BufferPool } from '../rpc/buffers.js';

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
}

/** A reply body encoded by hand (READ); `sent` runs once the socket is done with it. */
export interface RawReply {
  raw: true;
  body: Uint8Array[];
  sent: () => void;
}

/** Largest READ/WRITE payload offered in FSINFO (what libnfs, QEMU and ESXi use at most). */
export const MAX_IO = 1024 * 1024;
