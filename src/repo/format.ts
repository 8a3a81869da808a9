/**
 * The repository's on-disk format, version 1 (docs/repository-format.md explains it for operators).
 *
 *   repo/repo.json                     { format: "rebound-repo", version: 1, chunkSize, codec, createdAt }
 *   repo/chunks/ab/cd/<sha256 hex>     one chunk: 16-byte header + payload (see CHUNK_HEADER below);
 *                                      the name is the sha256 of the chunk's *uncompressed* bytes
 *   repo/vms/<vm>/<point>/point.json   restore point manifest; written last: its presence means the
 *                                      point is complete
 *   repo/vms/<vm>/<point>/<disk>.fidx  fixed index: 64-byte header + one 32-byte digest per chunk
 *                                      (chunk i covers bytes [i*chunkSize, (i+1)*chunkSize)); an
 *                                      all-zero digest marks an all-zero chunk, which is never stored
 *   repo/vms/<vm>/<point>/config/<f>   VM configuration files stored with the backup
 *   repo/tmp/<id>/                     a backup in progress; renamed into vms/ when complete
 *
 * An encrypted repository in a bucket (repo-crypto.ts) names chunks by HMAC-SHA256 instead of sha256
 * and seals chunks, indexes, manifests and config files in AES-256-GCM envelopes.
 *
 * Every restore point is a complete map of its disks (no chains): reading chunk i of a disk is one
 * index lookup (O(1)) and one chunk file. Data is shared between points and VMs by digest.
 * Crash rules: chunk files are written to a temp name and renamed; a point's chunks and index are
 * synced before point.json is written and the point directory is renamed into place, so an
 * interrupted backup leaves at most a tmp/ directory and unreferenced chunks, which gc removes.
 */
import zlib from 'node:zlib';
import { ReboundError } from '../errors.js';
import { addonFunctions } from '../native/addon.js';

export const REPO_FORMAT = 'rebound-repo';
export const REPO_VERSION = 1;
export const DIGEST_BYTES = 32;
export const ZERO_DIGEST = new Uint8Array(DIGEST_BYTES);

// ---- chunk files ---------------------------------------------------------------------------

/**
 * Chunk file header: magic "RBCK", u8 version, u8 codec, u16 flags, u32 raw length, u32 check.
 * Flag CHUNK_FLAG_CHECK: `check` is chunkCheck(name, chunk), and reads may verify that instead of
 * the full digest (docs/repository-format.md, "What a read proves"). Chunks written before the flag
 * existed have flags 0 and are verified by their full digest. Unknown flags make the file corrupt.
 */
export const CHUNK_MAGIC = 0x5242434b; // "RBCK"
export const CHUNK_HEADER_BYTES = 16;
export const CHUNK_FILE_VERSION = 1;
export const CHUNK_FLAG_CHECK = 1;

/**
 * The fast check of a chunk: CRC-32 (zlib's) of its name followed by its uncompressed bytes, so
 * it catches damage to the bytes and a file that carries another chunk.
 */
export function chunkCheck(digest: Uint8Array, raw: Uint8Array): number {
  return crc32(raw, crc32(digest));
}

/** CRC-32 as zlib.crc32 computes it: libdeflate's through the native addon (src/native/crc32.c, about 3x faster) when built. */
const crc32: (data: Uint8Array, value?: number) => number = addonFunctions<{ crc32(data: Uint8Array, value?: number): number }>('crc32')?.crc32 ?? zlib.crc32;

export function encodeChunkHeader(codecId: number, rawLength: number, check?: number): Buffer {
  const b = Buffer.alloc(CHUNK_HEADER_BYTES);
  b.writeUInt32BE(CHUNK_MAGIC, 0);
  b[4] = CHUNK_FILE_VERSION;
  b[5] = codecId;
  if (check !== undefined) {
    b.writeUInt16BE(CHUNK_FLAG_CHECK, 6);
    b.writeUInt32BE(check >>> 0, 12);
  }
  b.writeUInt32BE(rawLength, 8);
  return b;
}

export function decodeChunkHeader(b: Uint8Array, what: string): { codecId: number; rawLength: number; check: number | undefined } {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length < CHUNK_HEADER_BYTES || buf.readUInt32BE(0) !== CHUNK_MAGIC || buf[4] !== CHUNK_FILE_VERSION || (buf.readUInt16BE(6) & ~CHUNK_FLAG_CHECK) !== 0) {
    throw new ReboundError('ERR_CHUNK_CORRUPT', `chunk ${what} has a bad header`);
  }
  return { codecId: buf[5]!, rawLength: buf.readUInt32BE(8), check: buf.readUInt16BE(6) & CHUNK_FLAG_CHECK ? buf.readUInt32BE(12) : undefined };
}

// ---- fixed index -----------------------------------------------------------------------------

/** Index header: magic "RBFIDX01", u32 version, u32 chunkSize, u64 size, u64 count, 32 reserved. */
export const INDEX_MAGIC = 'RBFIDX01';
export const INDEX_VERSION = 1;
export const INDEX_HEADER_BYTES = 64;

export class FixedIndex {
  readonly size: number;
  readonly chunkSize: number;
  readonly count: number;
  /** count x 32 bytes. */
  readonly digests: Uint8Array;

  constructor(size: number, chunkSize: number, digests?: Uint8Array) {
    this.size = size;
    this.chunkSize = chunkSize;
    this.count = Math.ceil(size / chunkSize);
    this.digests = digests ?? new Uint8Array(this.count * DIGEST_BYTES);
    if (this.digests.length !== this.count * DIGEST_BYTES) throw new RangeError('index digest table has the wrong length');
  }

  /** The digest of chunk i (a view), or undefined for an all-zero chunk. */
  digest(i: number): Uint8Array | undefined {
    const d = this.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
    for (let k = 0; k < DIGEST_BYTES; k++) if (d[k] !== 0) return d;
    return undefined;
  }

  setDigest(i: number, digest: Uint8Array | undefined): void {
    if (digest) this.digests.set(digest, i * DIGEST_BYTES);
    else this.digests.fill(0, i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
  }

  /** Length of chunk i (the last one may be short). */
  chunkLength(i: number): number {
    return Math.min(this.chunkSize, this.size - i * this.chunkSize);
  }

  encode(): Buffer {
    const b = Buffer.alloc(INDEX_HEADER_BYTES + this.digests.length);
    b.write(INDEX_MAGIC, 0, 'latin1');
    b.writeUInt32BE(INDEX_VERSION, 8);
    b.writeUInt32BE(this.chunkSize, 12);
    b.writeBigUInt64BE(BigInt(this.size), 16);
    b.writeBigUInt64BE(BigInt(this.count), 24);
    b.set(this.digests, INDEX_HEADER_BYTES);
    return b;
  }

  static decode(b: Buffer, what: string): FixedIndex {
    const bad = (why: string): ReboundError => new ReboundError('ERR_REPO_CORRUPT', `index ${what}: ${why}`);
    if (b.length < INDEX_HEADER_BYTES || b.toString('latin1', 0, 8) !== INDEX_MAGIC) throw bad('not a rebound index');
    if (b.readUInt32BE(8) !== INDEX_VERSION) throw bad(`format version ${b.readUInt32BE(8)} is not supported`);
    const chunkSize = b.readUInt32BE(12);
    const size = Number(b.readBigUInt64BE(16));
    const count = Number(b.readBigUInt64BE(24));
    if (!Number.isSafeInteger(size) || chunkSize <= 0 || count !== Math.ceil(size / chunkSize)) throw bad('inconsistent header');
    if (b.length !== INDEX_HEADER_BYTES + count * DIGEST_BYTES) throw bad('truncated');
    return new FixedIndex(size, chunkSize, new Uint8Array(b.buffer, b.byteOffset + INDEX_HEADER_BYTES, count * DIGEST_BYTES));
  }
}

// ---- names -------------------------------------------------------------------------------

/** VM and disk names: safe as directory names, in URIs and in export names. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export function checkName(kind: 'VM' | 'disk', name: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `invalid ${kind} name '${name}': use letters, digits and . _ + - (max 128, not starting with a symbol)`);
  }
}

/** Restore point ids are UTC times in ISO basic format, sortable as strings: 20261122T034000Z. */
export function pointIdFor(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

export const POINT_ID_PATTERN = /^\d{8}T\d{6}Z(-\d+)?$/;

export function digestHex(d: Uint8Array): string {
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('hex');
}
