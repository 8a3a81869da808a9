/**
 * ChunkCache: a size-bounded LRU of uncompressed chunks in front of a ChunkReader, shared by every
 * image of a repository (chunks are keyed by digest, so data shared between restore points and
 * VMs is cached once). Concurrent loads of one chunk share a single read. Failed loads are not
 * cached: a chunk repaired on disk is read again.
 *
 * The budget covers chunks being loaded too: before a load starts, the least recently used chunks
 * make room for it, so cached + in-flight chunk memory stays within `maxBytes` (the daemon's
 * footprint follows the configured cache size; see tools/bench/fuse.mjs).
 */
import { LRUCache } from 'lru-cache';
import type { ChunkReader } from './repo-image.js';

export interface ChunkCacheStats {
  maxBytes: number;
  bytes: number;
  chunks: number;
  hits: number;
  misses: number;
}

export class ChunkCache implements ChunkReader {
  readonly #reader: ChunkReader;
  readonly #lru: LRUCache<string, Uint8Array>;
  readonly #loading = new Map<string, Promise<Uint8Array>>();
  readonly #maxBytes: number;
  /** Bytes reserved by loads in flight (each counted at the largest chunk seen so far). */
  #loadingBytes = 0;
  #largest = 0;
  #hits = 0;
  #misses = 0;

  /**
   * Fills `dst` with a whole chunk without caching it (a copier streaming a disk, repo-image.ts):
   * from the cache or a load in flight if there is one, else with the reader's own readChunkInto.
   * Rejects unless the chunk's length is `dst`'s. Present only when the reader has readChunkInto
   * (a local repository's chunk workers): a remote reader keeps the cached path and its readahead.
   */
  readonly readChunkInto: ((digest: Uint8Array, dst: Uint8Array) => Promise<void>) | undefined;

  constructor(reader: ChunkReader, maxBytes: number) {
    this.#reader = reader;
    this.readChunkInto = reader.readChunkInto ? (digest, dst) => this.#readChunkInto(digest, dst) : undefined;
    this.#maxBytes = maxBytes;
    this.#lru = new LRUCache<string, Uint8Array>({ maxSize: Math.max(1, maxBytes), sizeCalculation: (v) => Math.max(1, v.length) });
  }

  readChunk(digest: Uint8Array): Promise<Uint8Array> {
    const key = Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength).toString('hex');
    const hit = this.#lru.get(key);
    if (hit) {
      this.#hits++;
      return Promise.resolve(hit);
    }
    let pending = this.#loading.get(key);
    if (!pending) {
      this.#misses++;
      const reserved = this.#largest;
      this.#loadingBytes += reserved;
      while (this.#lru.size > 0 && this.#lru.calculatedSize + this.#loadingBytes > this.#maxBytes) this.#lru.pop();
      const done = (): void => {
        this.#loading.delete(key);
        this.#loadingBytes -= reserved;
      };
      pending = this.#reader.readChunk(Uint8Array.from(digest)).then(
        (chunk) => {
          done();
          this.#largest = Math.max(this.#largest, chunk.length);
          if (chunk.length <= this.#maxBytes) this.#lru.set(key, chunk);
          return chunk;
        },
        (err: unknown) => {
          done();
          throw err;
        },
      );
      this.#loading.set(key, pending);
    }
    return pending;
  }

  async #readChunkInto(digest: Uint8Array, dst: Uint8Array): Promise<void> {
    const key = Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength).toString('hex');
    const known = this.#lru.get(key) ?? (await this.#loading.get(key));
    if (!known) {
      this.#misses++;
      return this.#reader.readChunkInto!(Uint8Array.from(digest), dst);
    }
    this.#hits++;
    if (known.length !== dst.length) throw new Error(`chunk ${key} has ${known.length} bytes where ${dst.length} were expected`);
    dst.set(known);
  }

  /** Drops everything (tests; after a repair). */
  clear(): void {
    this.#lru.clear();
  }

  stats(): ChunkCacheStats {
    return { maxBytes: this.#maxBytes, bytes: this.#lru.calculatedSize, chunks: this.#lru.size, hits: this.#hits, misses: this.#misses };
  }
}
