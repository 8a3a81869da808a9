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

  constructor(reader: ChunkReader, maxBytes: number) {
    this.#reader = reader;
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

  /**
   * Fills `dst` with a whole chunk without caching it (a copier streaming a disk, repo-image.ts):
   * from the cache or a load in flight if there is one, else from the reader (its own
   * readChunkInto when it has one). Rejects unless the chunk's length is `dst`'s.
   */
  async readChunkInto(digest: Uint8Array, dst: Uint8Array): Promise<void> {
    const key = Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength).toString('hex');
    const known = this.#lru.get(key) ?? (await this.#loading.get(key));
    if (known) this.#hits++;
    else this.#misses++;
    if (!known && this.#reader.readChunkInto) return this.#reader.readChunkInto(Uint8Array.from(digest), dst);
    const chunk = known ?? (await this.#reader.readChunk(Uint8Array.from(digest)));
    if (chunk.length !== dst.length) throw new Error(`chunk ${key} has ${chunk.length} bytes where ${dst.length} were expected`);
    dst.set(chunk);
  }

  /** Drops everything (tests; after a repair). */
  clear(): void {
    this.#lru.clear();
  }

  stats(): ChunkCacheStats {
    return { maxBytes: this.#maxBytes, bytes: this.#lru.calculatedSize, chunks: this.#lru.size, hits: this.#hits, misses: this.#misses };
  }
}
