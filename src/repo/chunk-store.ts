/**
 * ChunkStore: content-addressed chunk files under repo/chunks (format.ts). Implements the
 * ChunkReader that RepoImage reads through.
 *
 * Design notes:
 *  - A chunk's name is the sha256 of its uncompressed bytes. Every read checks the chunk against its
 *    name: by the CRC-32 of name and bytes its header carries (chunks written since the check
 *    existed), or by re-hashing (older chunks; `full`: verify), so a damaged or swapped file is
 *    ERR_CHUNK_CORRUPT, never wrong data (docs/repository-format.md, "What a read proves").
 *  - Writes go to a temp name in the same directory and are renamed into place: a chunk file is
 *    either complete or absent. Durability is batched: `syncAll()` (one syncfs of the filesystem)
 *    runs before a restore point that references new chunks is committed.
 *  - Garbage collection races with backups (a backup may decide a chunk exists and skip writing it
 *    while gc deletes it). Backups therefore claim every digest they reference *before* checking
 *    for it (`ClaimSet`), and gc deletes only unclaimed chunks, announcing each deletion in
 *    `#deleting` so a claim that arrives during the unlink waits and then writes the chunk again.
 *  - A chunk is written to a temp file in `tmpDir` (the repository's tmp/, same filesystem) and
 *    renamed into place. A writer killed mid-chunk (kill -9) leaves its temp file there, and the
 *    repository empties tmp/ when it opens (it already did for unfinished backups): no walk of
 *    the chunk directories looks for leftovers.
 *  - An encrypted repository (repo-crypto.ts, `repo init --encrypt` without --s3) names chunks by
 *    HMAC and writes each file sealed: the same envelope as in a bucket.
 *  - A backup's new chunk in shared memory (ingest.ts reads into SharedArrayBuffers) is stored by a
 *    chunk worker from start to end (`storeOnWorker`: exists? encode, temp file, rename, all
 *    synchronous there): the event loop made five file-system round trips per chunk before and
 *    copied the chunk into the message; on 2 cores it was the backup's bottleneck.
 *  - Reads run on the chunk workers (chunk-worker.ts: read, decompress and check on a worker
 *    thread; the verified chunk is moved back, not copied). A migration's shared buffer is filled
 *    there (`readChunkInto`), and a restore to a file has the worker write the chunk into the file
 *    as well (`copyChunkTo`): nothing crosses threads. With workers disabled (`workers: 0`) the
 *    same steps run here, on libuv's pool (`#readInline`).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import type { ChunkBackend, ClaimSet, FileSink, PutResult, ReadChunkOptions, StoredChunk } from './backend.js';
import { ChunkBookkeeping } from './chunk-bookkeeping.js';
import { BlockError, ReboundError } from '../errors.js';
import { chunkPool, encodeOnWorker, loadChunkIntoOnWorker, loadChunkOnWorker, loadChunkToFileOnWorker, sealOnWorker, storeOnWorker } from './chunk-worker.js';
import { pwrite } from '../util/file-io.js';
import { codecById, NONE, type Codec } from './codec.js';
import { WorkerPoolError } from '../util/worker-pool.js';
import { CHUNK_HEADER_BYTES, chunkCheck, decodeChunkHeader, digestHex, encodeChunkHeader } from './format.js';
import { chunkDigest, seal, unseal, type RepoKeys } from './repo-crypto.js';

/**
 * sha256 on libuv's thread pool (WebCrypto digest jobs run there), for the inline path (chunk
 * workers off): verifying chunks spreads over the cores instead of holding the event loop that
 * serves the exports. Before the chunk workers existed it measured faster than `createHash` here:
 * migration 235-280 vs 147-171 MiB/s, sequential restore-point reads 379 vs 335 MiB/s (2 cores).
 */
export async function sha256(data: Uint8Array): Promise<Buffer> {
  return Buffer.from(await crypto.subtle.digest('SHA-256', data));
}

export type { ClaimSet, PutResult, StoreTotals } from './backend.js';

export class ChunkStore extends ChunkBookkeeping implements ChunkBackend {
  readonly kind = 'local' as const;
  readonly dir: string;
  /** Where chunks are written before they are renamed into place (same filesystem as `dir`). */
  readonly tmpDir: string;
  codec: Codec;
  /** An encrypted repository's subkeys: chunk files are sealed (repo-crypto.ts). */
  readonly keys: RepoKeys | undefined;
  readonly #deleting = new Map<string, Promise<void>>();

  /** `tmpDir` defaults to `tmp` beside `dir`: the repository's layout (repo/chunks, repo/tmp). */
  constructor(dir: string, codec: Codec, opts: { tmpDir?: string; keys?: RepoKeys } = {}) {
    super();
    this.dir = dir;
    this.keys = opts.keys;
    this.tmpDir = opts.tmpDir ?? path.join(path.dirname(dir), 'tmp');
    this.codec = codec;
    fs.mkdirSync(dir, { recursive: true });
    fs.mkdirSync(this.tmpDir, { recursive: true });
  }

  pathOf(hex: string): string {
    return path.join(this.dir, hex.slice(0, 2), hex.slice(2, 4), hex);
  }

  /** Stores a chunk unless present. `claims` gets the digest first (see the design notes). */
  async put(digest: Uint8Array, raw: Uint8Array, claims?: ClaimSet): Promise<PutResult> {
    const hex = digestHex(digest);
    claims?.add(hex);
    await this.#deleting.get(hex);
    const file = this.pathOf(hex);
    const pool = chunkPool();
    if (pool && !this.keys && raw.buffer instanceof SharedArrayBuffer) {
      // A backup reader's shared buffer: the worker checks, encodes, writes and renames (see the design notes).
      let bytes: number;
      try {
        bytes = await storeOnWorker(pool, raw, digest, this.codec.id, this.codec.level, file, this.tmpDir);
      } catch (err) {
        throw err instanceof WorkerPoolError ? storeError(err, `writing chunk ${hex}`) : err;
      }
      if (bytes > 0) this.countStored(bytes);
      return { stored: bytes > 0, bytes };
    }
    if (await exists(file)) return { stored: false, bytes: 0 };
    const { header, payload } = await encodeChunk(raw, this.codec, digest);
    const parts = this.keys ? [await sealChunk(this.keys, digest, header, payload)] : [header, payload];
    await fs.promises.mkdir(path.dirname(file), { recursive: true });
    const tmp = path.join(this.tmpDir, `chunk-${hex}-${crypto.randomBytes(4).toString('hex')}`);
    const fh = await fs.promises.open(tmp, 'w');
    try {
      await fh.writev(parts);
    } catch (err) {
      await fh.close();
      await fs.promises.rm(tmp, { force: true });
      throw storeError(err, `writing chunk ${hex}`);
    }
    await fh.close();
    await fs.promises.rename(tmp, file);
    const bytes = parts.reduce((n, p) => n + p.length, 0);
    this.countStored(bytes);
    return { stored: true, bytes };
  }

  /** Reads, decompresses and verifies a chunk. */
  async readChunk(digest: Uint8Array, opts: ReadChunkOptions = {}): Promise<Uint8Array> {
    const pool = chunkPool();
    if (!pool) return this.#readInline(digest, opts);
    const hex = digestHex(digest);
    try {
      return await loadChunkOnWorker(pool, this.pathOf(hex), digest, this.keys, opts.full);
    } catch (err) {
      throw this.#workerError(err, hex);
    }
  }

  /**
   * readChunk into `dst`, which must hold exactly the chunk: a view of a SharedArrayBuffer is
   * filled by the chunk worker itself (nothing allocated or moved per chunk), anything else gets
   * a copy. ERR_CHUNK_CORRUPT if the chunk's length is not `dst`'s.
   */
  async readChunkInto(digest: Uint8Array, dst: Uint8Array): Promise<void> {
    const pool = chunkPool();
    const hex = digestHex(digest);
    let n: number;
    if (pool && dst.buffer instanceof SharedArrayBuffer) {
      try {
        n = await loadChunkIntoOnWorker(pool, this.pathOf(hex), digest, this.keys, dst);
      } catch (err) {
        throw this.#workerError(err, hex);
      }
    } else {
      const raw = await this.readChunk(digest);
      n = raw.length;
      if (n <= dst.length) dst.set(raw);
    }
    if (n !== dst.length) throw new ReboundError('ERR_CHUNK_CORRUPT', `chunk ${hex} has ${n} bytes where ${dst.length} were expected`, { details: { chunk: hex } });
  }

  /** readChunk, then the chunk written into `sink` at `offset`, on a chunk worker (backend.ts). */
  async copyChunkTo(digest: Uint8Array, sink: FileSink, offset: number): Promise<void> {
    const pool = chunkPool();
    if (!pool) return writeToSink(await this.#readInline(digest), sink, offset);
    const hex = digestHex(digest);
    try {
      await loadChunkToFileOnWorker(pool, this.pathOf(hex), digest, this.keys, sink.fd, offset);
    } catch (err) {
      const code = err instanceof WorkerPoolError ? err.code : '';
      if (code.startsWith('WRITE_')) throw sinkError(err, sink);
      throw this.#workerError(err, hex);
    }
  }

  #workerError(err: unknown, hex: string): ReboundError {
    const code = err instanceof WorkerPoolError ? err.code : '';
    const details = { chunk: hex };
    if (code === 'MISSING') return new ReboundError('ERR_CHUNK_MISSING', `chunk ${hex} is missing from the repository`, { details });
    if (code === 'CORRUPT') return new ReboundError('ERR_CHUNK_CORRUPT', `chunk ${hex} ${(err as Error).message}`, { details });
    return new ReboundError('ERR_REPO_IO', `reading chunk ${hex}: ${(err as Error).message}`, { cause: err, details });
  }

  async #readInline(digest: Uint8Array, opts: ReadChunkOptions = {}): Promise<Uint8Array> {
    const hex = digestHex(digest);
    let data: Buffer;
    try {
      data = await fs.promises.readFile(this.pathOf(hex));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ReboundError('ERR_CHUNK_MISSING', `chunk ${hex} is missing from the repository`, { details: { chunk: hex } });
      }
      throw storeError(err, `reading chunk ${hex}`);
    }
    return decodeChunkFile(data, digest, this.keys, opts);
  }

  /** Every stored chunk (hex digest and file mtime), for gc and verify. */
  async *list(): AsyncGenerator<StoredChunk> {
    for (const a of await readdirSafe(this.dir)) {
      for (const b of await readdirSafe(path.join(this.dir, a))) {
        const d = path.join(this.dir, a, b);
        for (const name of await readdirSafe(d)) {
          if (!/^[0-9a-f]{64}$/.test(name)) continue;
          const st = await fs.promises.stat(path.join(d, name)).catch(() => undefined);
          if (st) yield { hex: name, mtimeMs: st.mtimeMs, size: st.size };
        }
      }
    }
  }

  /**
   * Deletes a chunk unless claimed; resolves with whether it was deleted. `size` (the file's, as
   * list() gave it) keeps totals() exact.
   */
  async remove(hex: string, size?: number): Promise<boolean> {
    if (this.isClaimed(hex)) return false;
    const unlink = fs.promises.rm(this.pathOf(hex), { force: true });
    this.#deleting.set(hex, unlink);
    try {
      await unlink;
    } finally {
      this.#deleting.delete(hex);
    }
    this.countRemoved(size);
    return true;
  }

  /** Makes every chunk written so far durable (one syncfs of the repository's filesystem). */
  async syncAll(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const p = spawn('sync', ['-f', this.dir], { stdio: 'ignore' });
      p.on('error', reject);
      p.on('close', (code) => (code === 0 ? resolve() : reject(new ReboundError('ERR_REPO_IO', `sync -f ${this.dir} failed (${code})`))));
    });
  }
}

/**
 * Checks and decodes the bytes of a stored chunk (header + payload, format.ts; sealed in an
 * envelope with `keys`, repo-crypto.ts): decrypts, decompresses and checks the chunk against
 * `digest` (its fast check, or re-hashed: sha256, or HMAC with the id key, always with `full`).
 * ERR_CHUNK_CORRUPT for anything else. Runs here, on the
 * calling thread (the chunk workers do the same when they exist: chunk-worker.ts).
 */
export async function decodeChunkFile(data: Uint8Array, digest: Uint8Array, keys?: RepoKeys, opts: ReadChunkOptions = {}): Promise<Uint8Array> {
  const hex = digestHex(digest);
  if (keys) {
    const plain = unseal(keys.encKey, 'chunk', digest, data);
    if (!plain) throw new ReboundError('ERR_CHUNK_CORRUPT', `chunk ${hex} does not decrypt (wrong key, damaged, or another object)`, { details: { chunk: hex } });
    data = plain;
  }
  const { codecId, rawLength, check } = decodeChunkHeader(data, hex);
  let raw: Uint8Array;
  try {
    raw = await codecById(codecId).decompress(data.subarray(CHUNK_HEADER_BYTES), rawLength);
  } catch (err) {
    if (err instanceof ReboundError) throw err;
    throw new ReboundError('ERR_CHUNK_CORRUPT', `chunk ${hex} does not decompress`, { cause: err, details: { chunk: hex } });
  }
  // The fast check where the file has one (in an encrypted repository, inside the envelope whose tag
  // was just checked; docs/repository-format.md, "What a read proves").
  const verified = raw.length === rawLength && (check !== undefined && !opts.full ? chunkCheck(digest, raw) === check : (keys ? chunkDigest(raw, keys) : await sha256(raw)).equals(digest));
  if (!verified) {
    throw new ReboundError('ERR_CHUNK_CORRUPT', `chunk ${hex} is corrupt (content does not match its digest)`, { details: { chunk: hex } });
  }
  return raw;
}

/**
 * A chunk file sealed for an encrypted repository (repo-crypto.ts envelope bound to the digest): on
 * a chunk worker (AES-GCM is CPU work), inline only with workers off.
 */
export async function sealChunk(keys: RepoKeys, digest: Uint8Array, header: Buffer, payload: Uint8Array): Promise<Buffer> {
  const pool = chunkPool();
  if (!pool) return seal(keys.encKey, 'chunk', digest, [header, payload]);
  const plain = Buffer.allocUnsafeSlow(header.length + payload.length);
  header.copy(plain, 0);
  plain.set(payload, header.length);
  return sealOnWorker(pool, keys.encKey, 'chunk', digest, plain);
}

/**
 * encodeChunkFile on a chunk worker (compression and the check off the event loop; chunk-worker.ts),
 * here with workers off.
 */
export async function encodeChunk(raw: Uint8Array, codec: Codec, digest: Uint8Array): Promise<{ header: Buffer; payload: Uint8Array }> {
  const pool = chunkPool();
  if (!pool) return encodeChunkFile(raw, codec, digest);
  const file = await encodeOnWorker(pool, raw, codec.id, codec.level, digest);
  return { header: file.subarray(0, CHUNK_HEADER_BYTES), payload: file.subarray(CHUNK_HEADER_BYTES) };
}

/**
 * The bytes chunk `digest` is stored as (header + payload): compressed with `codec` unless that does
 * not shrink it (then codec 0), with the fast check of the chunk in its header (format.ts).
 */
export async function encodeChunkFile(raw: Uint8Array, codec: Codec, digest: Uint8Array): Promise<{ header: Buffer; payload: Uint8Array }> {
  let payload = await codec.compress(raw);
  if (payload.length >= raw.length) {
    codec = NONE;
    payload = raw;
  }
  return { header: encodeChunkHeader(codec.id, raw.length, chunkCheck(digest, raw)), payload };
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.promises.access(file);
    return true;
  } catch {
    return false;
  }
}

async function readdirSafe(dir: string): Promise<string[]> {
  try {
    return await fs.promises.readdir(dir);
  } catch {
    return [];
  }
}

/** copyChunkTo with chunk workers off: the chunk read here is written into `sink` from here. */
export async function writeToSink(raw: Uint8Array, sink: FileSink, offset: number): Promise<void> {
  try {
    await pwrite(sink.fd, raw, offset);
  } catch (err) {
    throw sinkError(err, sink);
  }
}

/** A failed write into a sink (the restore's target): ENOSPC stays ENOSPC, anything else is EIO. */
export function sinkError(err: unknown, sink: FileSink): BlockError {
  const code = err instanceof WorkerPoolError ? err.code.slice('WRITE_'.length) : (err as NodeJS.ErrnoException).code;
  const out = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG' ? 'ENOSPC' : 'EIO';
  return new BlockError(out, `writing ${sink.path}: ${(err as Error).message}`);
}

function storeError(err: unknown, what: string): ReboundError {
  const code = (err as NodeJS.ErrnoException).code;
  return new ReboundError(code === 'ENOSPC' || code === 'STORE_ENOSPC' ? 'ERR_REPO_FULL' : 'ERR_REPO_IO', `${what}: ${(err as Error).message}`, { cause: err });
}
