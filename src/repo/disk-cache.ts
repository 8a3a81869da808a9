/**
 * DiskChunkCache: a bounded LRU of stored chunks (the bytes as they are in the bucket: header +
 * payload) on local disk, in front of an S3 repository, beside the memory cache of uncompressed
 * chunks (blockdev/base/chunk-cache.ts).
 *
 * Design notes:
 *  - Layout: DIR/ab/<sha256 hex> — the same chunk file format as a local repository's chunks, so
 *    a cached chunk is read and verified by the same chunk-worker code (decompress, check against
 *    the name: the file's fast check or the full digest, docs/repository-format.md). A cached file
 *    is never trusted: one that fails the check is deleted and the chunk is fetched again.
 *  - LRU order lives in memory (a Map in use order) and survives restarts through the files'
 *    mtimes: a hit touches its file, and opening the cache lists the files oldest first. The
 *    bytes used are the sum of the file sizes; storing past `maxBytes` evicts the least recently
 *    used files first.
 *  - Files are written to DIR/tmp-* and renamed into place (complete or absent); leftovers of a
 *    crash are removed when the cache opens. Nothing here is durable on purpose: a lost cache
 *    file is only a miss.
 *  - Left out: sharing one cache directory between daemons (one per data directory).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chunkPool, loadChunkOnWorker } from './chunk-worker.js';
import { decodeChunkFile } from './chunk-store.js';
import { digestHex } from './format.js';
import type { RepoKeys } from './repo-crypto.js';

export interface DiskCacheStats {
  dir: string;
  maxBytes: number;
  bytes: number;
  chunks: number;
  hits: number;
  misses: number;
  /** Cached files that failed their check (deleted and fetched again). */
  rejected: number;
}

export class DiskChunkCache {
  readonly dir: string;
  readonly maxBytes: number;
  /** An encrypted repository's subkeys: cached files are the sealed objects. */
  readonly keys: RepoKeys | undefined;
  /** hex -> file size, in use order (oldest first). */
  readonly #entries = new Map<string, number>();
  #bytes = 0;
  #hits = 0;
  #misses = 0;
  #rejected = 0;

  private constructor(dir: string, maxBytes: number, keys: RepoKeys | undefined) {
    this.dir = dir;
    this.keys = keys;
    this.maxBytes = maxBytes;
  }

  /** Opens (creating) the cache directory and learns what it holds, oldest use first. */
  static async open(dir: string, maxBytes: number, keys?: RepoKeys): Promise<DiskChunkCache> {
    const cache = new DiskChunkCache(dir, maxBytes, keys);
    await fs.promises.mkdir(dir, { recursive: true });
    const found: Array<{ hex: string; size: number; mtimeMs: number }> = [];
    for (const name of await fs.promises.readdir(dir)) {
      const sub = path.join(dir, name);
      if (name.startsWith('tmp-')) {
        await fs.promises.rm(sub, { force: true });
        continue;
      }
      if (!/^[0-9a-f]{2}$/.test(name)) continue;
      for (const hex of await fs.promises.readdir(sub)) {
        if (!/^[0-9a-f]{64}$/.test(hex)) continue;
        const st = await fs.promises.stat(path.join(sub, hex)).catch(() => undefined);
        if (st) found.push({ hex, size: st.size, mtimeMs: st.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const f of found) {
      cache.#entries.set(f.hex, f.size);
      cache.#bytes += f.size;
    }
    await cache.#evict(0);
    return cache;
  }

  pathOf(hex: string): string {
    return path.join(this.dir, hex.slice(0, 2), hex);
  }

  has(hex: string): boolean {
    return this.#entries.has(hex);
  }

  /**
   * The verified uncompressed chunk if it is cached, else undefined (a miss). A cached file that
   * fails its check is deleted (and is a miss).
   */
  async read(digest: Uint8Array): Promise<Uint8Array | undefined> {
    const hex = digestHex(digest);
    if (!this.#entries.has(hex)) {
      this.#misses++;
      return undefined;
    }
    const file = this.pathOf(hex);
    try {
      const pool = chunkPool();
      const raw = pool ? await loadChunkOnWorker(pool, file, digest, this.keys) : await decodeChunkFile(await fs.promises.readFile(file), digest, this.keys);
      this.#hits++;
      this.#use(hex);
      const now = new Date();
      fs.promises.utimes(file, now, now).catch(() => undefined);
      return raw;
    } catch {
      this.#rejected++;
      this.#misses++;
      await this.remove(hex);
      return undefined;
    }
  }

  /** Stores a chunk's stored bytes (best effort: a full disk only means no caching). */
  async store(hex: string, parts: Uint8Array[]): Promise<void> {
    if (this.#entries.has(hex)) return;
    const size = parts.reduce((n, p) => n + p.length, 0);
    if (size > this.maxBytes) return;
    await this.#evict(size);
    const tmp = path.join(this.dir, `tmp-${hex}-${crypto.randomBytes(4).toString('hex')}`);
    try {
      const fh = await fs.promises.open(tmp, 'w');
      try {
        await fh.writev(parts);
      } finally {
        await fh.close();
      }
      await fs.promises.mkdir(path.dirname(this.pathOf(hex)), { recursive: true });
      await fs.promises.rename(tmp, this.pathOf(hex));
    } catch {
      await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
      return;
    }
    if (!this.#entries.has(hex)) {
      this.#entries.set(hex, size);
      this.#bytes += size;
    }
  }

  async remove(hex: string): Promise<void> {
    const size = this.#entries.get(hex);
    if (size === undefined) return;
    this.#entries.delete(hex);
    this.#bytes -= size;
    await fs.promises.rm(this.pathOf(hex), { force: true }).catch(() => undefined);
  }

  /** Empties the cache (tests, `repo cache clear`). */
  async clear(): Promise<void> {
    for (const hex of [...this.#entries.keys()]) await this.remove(hex);
  }

  stats(): DiskCacheStats {
    return { dir: this.dir, maxBytes: this.maxBytes, bytes: this.#bytes, chunks: this.#entries.size, hits: this.#hits, misses: this.#misses, rejected: this.#rejected };
  }

  #use(hex: string): void {
    const size = this.#entries.get(hex);
    if (size === undefined) return;
    this.#entries.delete(hex);
    this.#entries.set(hex, size);
  }

  async #evict(room: number): Promise<void> {
    while (this.#bytes + room > this.maxBytes && this.#entries.size > 0) {
      const oldest = this.#entries.keys().next().value as string;
      await this.remove(oldest);
    }
  }
}
