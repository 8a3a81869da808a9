/**
 * RepoImage: a read-only BlockDevice over one disk of a restore point. It knows the disk through a
 * ChunkMap (chunk i -> digest, or none for an all-zero chunk) and reads chunks through a
 * ChunkReader; it never imports repo/ (DESIGN.md §2).
 *
 * Design notes:
 *  - A read touching several chunks fetches them concurrently; zero chunks are filled locally.
 *  - Sequential access (a read starting where the previous one ended) triggers readahead of the
 *    next `readahead` chunks (READAHEAD_CHUNKS by default) through the same reader (so through
 *    the shared cache).
 *  - `onChunk` tells the opener which chunks clients needed (an S3 repository keeps them as the
 *    point's access map, for the next recovery's prefetch).
 *  - Extents come from the map: zero chunks are holes that read as zero; everything else is data.
 *  - A read of whole chunks into shared memory (a SharedArrayBuffer: a copier's own buffer, such
 *    as a migration's) asks the reader to fill it (`readChunkInto`) and reads nothing ahead: a
 *    copier reads each chunk once and keeps its own requests in flight, and the chunk worker
 *    writes straight into its buffer (repo/chunk-worker.ts), so streaming a disk allocates no
 *    buffer per chunk and does not push the chunks a running VM needs out of the cache.
 *  - A chunk that is missing or fails its digest check fails the read with EIO and a message
 *    naming the chunk: never wrong data.
 */
import { BlockError, errorText } from '../../errors.js';
import type { Capabilities, Extent } from '../types.js';
import { MAX_REQUEST_BYTES, readOnlyCapabilities } from '../types.js';
import { ReadOnlyDevice } from './read-only.js';

/** Fetches a chunk's uncompressed bytes by digest; rejects if it is missing or corrupt. */
export interface ChunkReader {
  readChunk(digest: Uint8Array): Promise<Uint8Array>;
  /**
   * Optional: fills `dst` with the whole chunk (rejects unless its length is dst's). RepoImage uses
   * it for whole-chunk reads into shared memory (see the design notes).
   */
  readChunkInto?(digest: Uint8Array, dst: Uint8Array): Promise<void>;
}

/** The disk layout: fixed-size chunks, each with a digest or none (all zero). */
export interface ChunkMap {
  readonly size: number;
  readonly chunkSize: number;
  readonly count: number;
  digest(i: number): Uint8Array | undefined;
}

/** Chunks read ahead of a sequential reader unless the opener says otherwise. */
export const READAHEAD_CHUNKS = 4;

export interface RepoImageOptions {
  onClose?: () => void;
  /** Chunks to read ahead of a sequential reader (a remote repository wants more). */
  readahead?: number;
  /** Called with each chunk number a client read needs (not readahead): access maps. */
  onChunk?: (i: number) => void;
}

/**
 * What a RepoImage of `disk` offers, known before its index is loaded: from the disk's own chunk
 * size (its manifest entry or its ChunkMap), which is not necessarily the repository's current one.
 */
export function repoImageCapabilities(disk: { readonly chunkSize: number }): Capabilities;
/** @deprecated Pass the disk (`{chunkSize}` of its manifest entry): the repository's chunk size may not be the disk's. */
export function repoImageCapabilities(chunkSize: number): Capabilities;
export function repoImageCapabilities(disk: { readonly chunkSize: number } | number): Capabilities {
  const chunkSize = typeof disk === 'number' ? disk : disk.chunkSize;
  return readOnlyCapabilities({
    canExtents: true,
    blockSize: { min: 1, preferred: Math.min(Math.max(chunkSize, 4096), 1024 * 1024), max: MAX_REQUEST_BYTES },
  });
}

export class RepoImage extends ReadOnlyDevice {
  readonly name = 'repo-image';
  protected override readonly readOnlyMessage = 'restore points are read-only';
  readonly size: number;
  readonly #map: ChunkMap;
  readonly #reader: ChunkReader;
  readonly #onClose: (() => void) | undefined;
  readonly #readaheadChunks: number;
  readonly #onChunk: ((i: number) => void) | undefined;
  #lastEnd = -1;
  #closed = false;

  constructor(map: ChunkMap, reader: ChunkReader, opts: RepoImageOptions = {}) {
    super();
    this.#map = map;
    this.#reader = reader;
    this.size = map.size;
    this.#onClose = opts.onClose;
    this.#readaheadChunks = opts.readahead ?? READAHEAD_CHUNKS;
    this.#onChunk = opts.onChunk;
  }

  override capabilities(): Capabilities {
    return repoImageCapabilities(this.#map);
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    if (this.#closed) throw new BlockError('ESHUTDOWN', 'image is closed');
    const cs = this.#map.chunkSize;
    const end = offset + dst.length;
    const first = Math.floor(offset / cs);
    const last = Math.floor((end - 1) / cs);
    // Whole chunks into shared memory: filled by the reader, nothing read ahead (design notes).
    const direct = this.#reader.readChunkInto !== undefined && dst.buffer instanceof SharedArrayBuffer && offset % cs === 0 && (end % cs === 0 || end === this.size);
    const jobs: Promise<void>[] = [];
    for (let i = first; i <= last; i++) {
      const s = Math.max(offset, i * cs);
      const e = Math.min(end, (i + 1) * cs);
      const part = dst.subarray(s - offset, e - offset);
      const digest = this.#map.digest(i);
      if (!digest) {
        part.fill(0);
        continue;
      }
      if (direct) jobs.push(this.#chunkInto(i, digest, part));
      else jobs.push(this.#chunk(i, digest).then((chunk) => part.set(chunk.subarray(s - i * cs, e - i * cs))));
    }
    if (offset === this.#lastEnd && !direct) this.#readahead(last + 1);
    this.#lastEnd = end;
    await Promise.all(jobs);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const cs = this.#map.chunkSize;
    const end = offset + length;
    const out: Extent[] = [];
    for (let i = Math.floor(offset / cs); i * cs < end && out.length < 4096; i++) {
      const s = Math.max(offset, i * cs);
      const e = Math.min(end, (i + 1) * cs);
      const zero = this.#map.digest(i) === undefined;
      const last = out[out.length - 1];
      if (last && last.zero === zero) last.length += e - s;
      else out.push({ offset: s, length: e - s, hole: zero, zero });
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose?.();
  }

  async #chunk(i: number, digest: Uint8Array): Promise<Uint8Array> {
    this.#onChunk?.(i);
    try {
      const chunk = await this.#reader.readChunk(digest);
      if (chunk.length !== Math.min(this.#map.chunkSize, this.size - i * this.#map.chunkSize)) {
        throw new Error(`chunk ${i} has ${chunk.length} bytes`);
      }
      return chunk;
    } catch (err) {
      throw new BlockError('EIO', `chunk ${i} of the restore point is unreadable: ${errorText(err)}`, { cause: err });
    }
  }

  async #chunkInto(i: number, digest: Uint8Array, dst: Uint8Array): Promise<void> {
    this.#onChunk?.(i);
    try {
      await this.#reader.readChunkInto!(digest, dst);
    } catch (err) {
      throw new BlockError('EIO', `chunk ${i} of the restore point is unreadable: ${errorText(err)}`, { cause: err });
    }
  }

  #readahead(from: number): void {
    for (let i = from; i < Math.min(from + this.#readaheadChunks, this.#map.count); i++) {
      const d = this.#map.digest(i);
      if (d) this.#reader.readChunk(d).catch(() => undefined);
    }
  }
}
