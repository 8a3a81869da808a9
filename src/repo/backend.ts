/**
 * The repository's two storage interfaces, each with a local-directory and an S3 implementation:
 *  - ChunkBackend: content-addressed chunks (put once, read verified, list, remove).
 *    Local: chunk-store.ts (DATA/repo/chunks, unchanged on disk). S3: s3-chunk-store.ts.
 *  - PointBackend: restore points (manifest, indexes, config files): commit a built point
 *    atomically, read its files, delete it, list every manifest (the catalog is rebuilt from it).
 *    Local: local-points.ts (DATA/repo/vms). S3: s3-points.ts.
 * Callers may rely on: a committed point is complete (its manifest is written last); every chunk
 * read is verified against its digest (ERR_CHUNK_CORRUPT / ERR_CHUNK_MISSING, never wrong data);
 * put() is idempotent (several writers may store the same chunk).
 */
import type { ChunkReader } from '../blockdev/base/repo-image.js';
import type { Codec } from './codec.js';
import type { PointManifest } from './manifest.js';
import type { RepoKeys } from './repo-crypto.js';

/** Digests a backup (or another user) references and must not lose to gc. */
export type ClaimSet = Set<string>;

export interface PutResult {
  /** False when the chunk was already stored (deduplicated). */
  stored: boolean;
  /** Bytes written (compressed, with header); 0 if deduplicated. */
  bytes: number;
}

/** What the store holds: chunks and the bytes they take. */
export interface StoreTotals {
  chunks: number;
  storedBytes: number;
}

export interface StoredChunk {
  hex: string;
  /** Last modification (filesystem clock, or the object store's). */
  mtimeMs: number;
  size: number;
}

export interface ReadChunkOptions {
  /**
   * Recompute the chunk's full digest (sha256, or HMAC-SHA256 when encrypted) even when its file
   * carries the fast check (format.ts CHUNK_FLAG_CHECK): `rebound verify`.
   */
  full?: boolean;
}

/**
 * An open file a chunk can be written into from any thread (a restore's target file): its
 * descriptor, valid until its owner closes it, and its path for messages.
 */
export interface FileSink {
  readonly fd: number;
  readonly path: string;
}

export interface ChunkBackend extends ChunkReader {
  readonly kind: 'local' | 's3';
  /** Where the chunks are: a directory, or s3://bucket/prefix/chunks. */
  readonly dir: string;
  codec: Codec;
  /**
   * An encrypted repository's subkeys (repo-crypto.ts): chunk names are HMAC-SHA256 with
   * `keys.idKey` instead of sha256, stored chunks are sealed. Undefined: not encrypted.
   */
  readonly keys?: RepoKeys;
  /** Where chunk `hex` is stored (a file path or an s3:// URL), for messages and tests. */
  pathOf(hex: string): string;
  claim(): { set: ClaimSet; release: () => void };
  isClaimed(hex: string): boolean;
  /**
   * Stores a chunk unless present. `expectNew`: the caller expects it absent, so a store may create
   * it with one conditional request instead of a check and a create (S3: PUT If-None-Match: *);
   * when it was there after all, the answer is still `stored: false`.
   */
  put(digest: Uint8Array, raw: Uint8Array, claims?: ClaimSet, opts?: { expectNew?: boolean }): Promise<PutResult>;
  /**
   * Reads and verifies a chunk from the store itself (never from a cache: verify uses it, with
   * `full`: the full digest even for a chunk that carries the fast check, format.ts).
   */
  readChunk(digest: Uint8Array, opts?: ReadChunkOptions): Promise<Uint8Array>;
  /**
   * Reads and verifies a chunk as readChunk does and writes it into `sink` at `offset`, without
   * handing it to the caller (local: on a chunk worker). A failure to write is a BlockError
   * (ENOSPC or EIO) naming the sink; anything else is the chunk's error as in readChunk.
   * Optional: a backend without it is read with readChunk and written by the caller.
   */
  copyChunkTo?(digest: Uint8Array, sink: FileSink, offset: number): Promise<void>;
  list(): AsyncGenerator<StoredChunk>;
  totals(): Promise<StoreTotals>;
  remove(hex: string, size?: number): Promise<boolean>;
  /** Makes every chunk put so far durable. */
  syncAll(): Promise<void>;
}

export interface PointBackend {
  /** Where a point lives (directory or s3:// URL), for messages. */
  locationOf(vm: string, id: string): string;
  /** One file of a point (an index, config/NAME); rejects with an error whose code is ENOENT when absent. */
  readFile(vm: string, id: string, name: string): Promise<Buffer>;
  /** Whether the point is complete (its manifest exists). */
  exists(vm: string, id: string): Promise<boolean>;
  /**
   * Commits the point built in the local directory `tmp` (indexes, config/) with manifest `m`.
   * Resolves with the manifest as committed (its id may get a suffix if another writer took it).
   */
  commit(tmp: string, m: PointManifest): Promise<PointManifest>;
  /** Deletes a point so that it never looks complete half-way; false if it was already gone. */
  delete(vm: string, id: string): Promise<boolean>;
  /** Every complete point's manifest, in no particular order. */
  listManifests(vm?: string): Promise<PointManifest[]>;
}
