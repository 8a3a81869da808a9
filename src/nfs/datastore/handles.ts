/**
 * File handles and file ids of the datastore, stable across daemon restarts.
 *
 * Design notes:
 *  - A file id is 64 bits of HMAC-SHA256(secret, identity). The identity of a virtual object is
 *    its place in the tree (`flat:<session>@<created>:<disk>`, `point:<vm>:<id>`, ...); a file the
 *    hypervisor created is identified by its inode number inside its session, so it keeps its id
 *    across renames and restarts (ESXi names lock files `.lck-<fileid>` and keeps handles for the
 *    life of a mount). The secret (32 random bytes) is created once under the state directory, so
 *    two datastores never hand out the same handles.
 *  - A handle is 24 bytes: version, kind, 4-byte datastore id, file id, generation. The generation
 *    is 0 for virtual objects (their identity already includes the session's creation time, so a
 *    re-created session gets new ids) and the file's birth time for real files (an inode number
 *    reused after a delete does not revive an old handle).
 *  - Handles carry no path: the datastore keeps fileid -> object in memory and rebuilds that index
 *    by walking its tree when a handle is not found (after a restart). What is not found then is
 *    gone: NFS3ERR_STALE.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const HANDLE_BYTES = 24;
const HANDLE_VERSION = 1;
const SECRET_FILE = 'nfs-secret';

export interface HandleFields {
  fileid: bigint;
  gen: bigint;
}

export class HandleCodec {
  readonly #secret: Buffer;
  readonly dsid: number;

  constructor(secret: Buffer) {
    this.#secret = secret;
    this.dsid = crypto.createHmac('sha256', secret).update('datastore-id').digest().readUInt32BE(0);
  }

  /** Loads the datastore secret from `stateDir`, creating it (durably) on first use. */
  static open(stateDir: string): HandleCodec {
    fs.mkdirSync(stateDir, { recursive: true });
    const file = path.join(stateDir, SECRET_FILE);
    try {
      const s = fs.readFileSync(file);
      if (s.length === 32) return new HandleCodec(s);
    } catch {
      // absent: create below
    }
    const secret = crypto.randomBytes(32);
    const tmp = `${file}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeSync(fd, secret);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    const dfd = fs.openSync(stateDir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
    return new HandleCodec(secret);
  }

  /** The 64-bit file id of an identity (never 0). */
  fileid(identity: string): bigint {
    const d = crypto.createHmac('sha256', this.#secret).update(identity).digest();
    const id = d.readBigUInt64BE(0);
    return id === 0n ? 1n : id;
  }

  encode(f: HandleFields): Buffer {
    const b = Buffer.alloc(HANDLE_BYTES);
    b[0] = HANDLE_VERSION;
    b.writeUInt32BE(this.dsid, 4);
    b.writeBigUInt64BE(f.fileid, 8);
    b.writeBigUInt64BE(BigInt.asUintN(64, f.gen), 16);
    return b;
  }

  /** 'bad' for bytes that are no handle of ours at all, 'foreign' for another datastore's. */
  decode(data: Uint8Array): HandleFields | 'bad' | 'foreign' {
    if (data.length !== HANDLE_BYTES || data[0] !== HANDLE_VERSION) return 'bad';
    const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (b.readUInt32BE(4) !== this.dsid) return 'foreign';
    return { fileid: b.readBigUInt64BE(8), gen: b.readBigUInt64BE(16) };
  }
}
