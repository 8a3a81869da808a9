/**
 * S3ChunkStore: the chunk store of an S3 repository — one object per chunk, key
 * `PREFIX/chunks/ab/<sha256 hex>`, body the same chunk file as a local repository's (16-byte
 * header + payload; docs/repository-format.md says why one object per chunk).
 *
 * Design notes:
 *  - put() is idempotent: a HEAD says whether the chunk is there; if not it is PUT whole (a
 *    concurrent writer of the same digest writes the same content; in an encrypted repository
 *    under another nonce, equally valid). A chunk is visible only once complete (S3 PUTs are
 *    atomic), so a backup that loses the endpoint leaves whole chunks or none, and no point (the
 *    manifest is written last, s3-points.ts).
 *  - A chunk the backup expects to be new (not in the disk's previous point, ingest.ts) skips the
 *    HEAD: one conditional PUT (If-None-Match: *, which point claims rely on already) creates it
 *    or answers 412. A first backup made half its requests on HEADs that all said 404, and a HEAD
 *    still goes through the SDK (about 3 ms of event-loop work; GET and PUT no longer do:
 *    s3-signed-http.ts).
 *  - readChunk() always goes to the bucket and verifies (verify uses it; a restore to a file uses
 *    copyChunkTo, the same fetch with the chunk decoded and written into the file by a worker);
 *    readCached() — what exports read through — tries the disk cache (disk-cache.ts, verified
 *    again) first, then fetches, verifies, and keeps the stored bytes in the disk cache.
 *    Concurrent fetches of one chunk share one request. Every read retries per S3Objects: a
 *    short outage makes it wait; past the limit it fails (ERR_REPO_UNREACHABLE -> EIO).
 *  - Encrypted repositories (repo-crypto.ts): the object is the chunk file sealed in an envelope
 *    bound to the chunk's name (HMAC of its content); sealing on put and opening + decompressing
 *    + verifying on fetch run on the chunk workers. The disk cache keeps the sealed bytes.
 *  - Claims (running backups and restores of this gateway) work as in the local store; what other
 *    gateways do is coordinated through the bucket (s3-lease.ts, gc-s3.ts).
 */
import { ReboundError } from '../errors.js';
import type { ChunkBackend, ClaimSet, FileSink, PutResult, ReadChunkOptions, StoredChunk } from './backend.js';
import { ChunkBookkeeping } from './chunk-bookkeeping.js';
import { decodeChunkFile, encodeChunk, sealChunk, sinkError, writeToSink } from './chunk-store.js';
import type { Codec } from './codec.js';
import type { DiskChunkCache } from './disk-cache.js';
import { digestHex } from './format.js';
import { chunkPool, decodeChunkOnWorker, decodeChunkToFileOnWorker } from './chunk-worker.js';
import type { RepoKeys } from './repo-crypto.js';
import { WorkerPoolError } from '../util/worker-pool.js';
import type { S3Objects } from './s3-objects.js';

export function chunkKey(hex: string): string {
  return `chunks/${hex.slice(0, 2)}/${hex}`;
}

export class S3ChunkStore extends ChunkBookkeeping implements ChunkBackend {
  readonly kind = 's3' as const;
  readonly dir: string;
  codec: Codec;
  readonly objects: S3Objects;
  readonly diskCache: DiskChunkCache | undefined;
  readonly keys: RepoKeys | undefined;
  readonly #fetching = new Map<string, Promise<Uint8Array>>();

  constructor(objects: S3Objects, codec: Codec, diskCache?: DiskChunkCache, keys?: RepoKeys) {
    super();
    this.keys = keys;
    this.objects = objects;
    this.codec = codec;
    this.diskCache = diskCache;
    this.dir = objects.url('chunks');
  }

  pathOf(hex: string): string {
    return this.objects.url(chunkKey(hex));
  }

  async put(digest: Uint8Array, raw: Uint8Array, claims?: ClaimSet, opts: { expectNew?: boolean } = {}): Promise<PutResult> {
    const hex = digestHex(digest);
    claims?.add(hex);
    if (!opts.expectNew && (await this.objects.head(chunkKey(hex)))) return { stored: false, bytes: 0 };
    const { header, payload } = await encodeChunk(raw, this.codec, digest);
    const body = await this.#seal(digest, header, payload);
    // A chunk expected new is created conditionally: one request, and a 412 means it was there.
    if (!(await this.objects.put(chunkKey(hex), body, { ifAbsent: opts.expectNew }))) return { stored: false, bytes: 0 };
    this.countStored(body.length);
    return { stored: true, bytes: body.length };
  }

  /** From the bucket, verified (never from a cache). */
  async readChunk(digest: Uint8Array, opts: ReadChunkOptions = {}): Promise<Uint8Array> {
    const { raw } = await this.#fetch(digest, opts);
    return raw;
  }

  /** Through the disk cache: what exports read. */
  readCached(digest: Uint8Array): Promise<Uint8Array> {
    const hex = digestHex(digest);
    let pending = this.#fetching.get(hex);
    if (!pending) {
      pending = (async () => {
        const cached = await this.diskCache?.read(digest);
        if (cached) return cached;
        const { raw, stored } = await this.#fetch(digest);
        void this.diskCache?.store(hex, [stored]);
        return raw;
      })().finally(() => this.#fetching.delete(hex));
      this.#fetching.set(hex, pending);
    }
    return pending;
  }

  /**
   * From the bucket, verified, and written into `sink` at `offset` by a chunk worker (a restore to a
   * file: the chunk does not come back to the event loop). A write failure is a BlockError naming
   * the sink (backend.ts).
   */
  async copyChunkTo(digest: Uint8Array, sink: FileSink, offset: number): Promise<void> {
    const pool = chunkPool();
    if (!pool) return writeToSink(await this.readChunk(digest), sink, offset);
    const hex = digestHex(digest);
    const stored = await this.#get(hex);
    try {
      await decodeChunkToFileOnWorker(pool, stored, digest, this.keys, sink.fd, offset);
    } catch (err) {
      if (err instanceof WorkerPoolError && err.code.startsWith('WRITE_')) throw sinkError(err, sink);
      throw decodeError(err, hex);
    }
  }

  async #get(hex: string): Promise<Buffer> {
    let stored: Buffer | undefined;
    try {
      stored = await this.objects.get(chunkKey(hex));
    } catch (err) {
      const code = err instanceof ReboundError ? err.code : 'ERR_REPO_IO';
      throw new ReboundError(code, `reading chunk ${hex}: ${(err as Error).message}`, { cause: err, details: { chunk: hex } });
    }
    if (!stored) throw new ReboundError('ERR_CHUNK_MISSING', `chunk ${hex} is missing from the repository (${this.pathOf(hex)})`, { details: { chunk: hex } });
    return stored;
  }

  async #fetch(digest: Uint8Array, opts: ReadChunkOptions = {}): Promise<{ raw: Uint8Array; stored: Buffer }> {
    const hex = digestHex(digest);
    const stored = await this.#get(hex);
    // Decrypt (if encrypted), decompress and verify on a chunk worker (CPU work that must not hold
    // the event loop); inline only with workers off.
    const pool = chunkPool();
    if (!pool) return { raw: await decodeChunkFile(stored, digest, this.keys, opts), stored };
    try {
      return await decodeChunkOnWorker(pool, stored, digest, this.keys, opts.full);
    } catch (err) {
      throw decodeError(err, hex);
    }
  }

  /** The object body of a chunk: header + payload, sealed (on a chunk worker) in an encrypted repository. */
  async #seal(digest: Uint8Array, header: Buffer, payload: Uint8Array): Promise<Buffer> {
    return this.keys ? sealChunk(this.keys, digest, header, payload) : Buffer.concat([header, payload]);
  }

  async *list(): AsyncGenerator<StoredChunk> {
    for await (const o of this.objects.list('chunks/')) {
      const hex = o.key.slice(o.key.lastIndexOf('/') + 1);
      if (/^[0-9a-f]{64}$/.test(hex) && o.key === chunkKey(hex)) yield { hex, mtimeMs: o.mtimeMs, size: o.size };
    }
  }

  async remove(hex: string, size?: number): Promise<boolean> {
    if (this.isClaimed(hex)) return false;
    await this.objects.delete(chunkKey(hex));
    await this.diskCache?.remove(hex);
    this.countRemoved(size);
    return true;
  }

  /** A completed PUT is durable on the endpoint: nothing to do. */
  async syncAll(): Promise<void> {}
}

/** A chunk worker's failure to decode a fetched chunk: ERR_CHUNK_CORRUPT, or ERR_REPO_IO. */
function decodeError(err: unknown, hex: string): ReboundError {
  const details = { chunk: hex };
  if (err instanceof WorkerPoolError && err.code === 'CORRUPT') return new ReboundError('ERR_CHUNK_CORRUPT', `chunk ${hex} ${err.message}`, { details });
  return new ReboundError('ERR_REPO_IO', `decoding chunk ${hex}: ${(err as Error).message}`, { cause: err, details });
}
