/**
 * Garbage collection: `rebound gc` deletes chunks that nothing references any more (left behind by
 * pruned points and interrupted backups). Mark and sweep, run inside the daemon while exports are
 * read and backups run.
 *
 * Design notes:
 *  - T0 is the mtime of a marker file gc writes into repo/tmp when it starts, not Date.now():
 *    chunk mtimes come from the same (filesystem) clock, which may be coarse (kernel jiffies) or
 *    another machine's (NFS). A chunk written after gc started has mtime >= T0 and is kept
 *    (`keptNew`); `graceMs` moves the cutoff further back.
 *  - Mark: the digests of every restore point's indexes, taken from the catalog *and* from the
 *    point directories on disk (the files are the source of truth; a point missing from a stale
 *    catalog still keeps its chunks), plus the indexes of open images (`repo.openIndexes()`),
 *    which keep a pruned point's chunks while an export still serves it. A point deleted while we
 *    read it is skipped; an index that cannot be read fails the whole run (we cannot know what it
 *    references, so nothing may be deleted).
 *  - Sweep: a chunk is deleted only if it is unmarked, older than the cutoff, and
 *    `store.remove()` agrees (it refuses chunks claimed by running backups and restores).
 *  - The race that matters: a backup dedups against an old unreferenced chunk (claiming it),
 *    commits its point after our mark and releases its claim before we sweep that chunk. The
 *    backup renames its point directory into vms/ (synchronously) before it releases the claim,
 *    so before every batch of deletions we list the point directories synchronously, mark any new
 *    point (async, then look again), re-mark new open indexes, and only then call `remove()` for
 *    the whole batch in the same synchronous stretch. At that instant every chunk is either in a
 *    visible point, claimed, or truly garbage; a claim arriving later waits for the unlink and
 *    writes the chunk again (ChunkStore's design notes).
 *  - Abort is checked between chunks and batches; an interrupted run has only deleted garbage.
 *  - Left out: other processes. Claims and open images are in-memory, so gc is only safe inside
 *    the process that owns the data directory (the daemon holds its lock). A repository in an S3
 *    bucket shared by several gateways is collected by gc-s3.ts instead (a lease and backup
 *    markers in the bucket). The marked set is an
 *    in-memory Set of hex digests (~150 bytes per chunk); a repository with tens of millions of
 *    chunks would want a sorted digest file or a Bloom filter instead.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../errors.js';
import { digestHex, type FixedIndex } from './format.js';
import { parseManifest, type PointManifest } from './manifest.js';
import type { Repository } from './repository.js';
import { gcS3 } from './gc-s3.js';

export interface GcProgress {
  /** 'mark': done/total count restore points; 'sweep': done/total count chunk directories (ab/). */
  phase: 'mark' | 'sweep';
  done: number;
  total: number;
  markedChunks: number;
  scannedChunks: number;
  removedChunks: number;
  removedBytes: number;
}

export interface GcOptions {
  signal?: AbortSignal;
  onProgress?: (p: GcProgress) => void;
  /** Keep unreferenced chunks younger than this (ms before gc started). Default 0. */
  graceMs?: number;
}

export interface GcResult {
  startedAt: string;
  /** Chunks with an mtime at or after this (epoch ms, filesystem clock) were kept as too new. */
  cutoffMs: number;
  /** Restore points whose indexes were marked. */
  points: number;
  /** Distinct digests referenced by restore points and open images. */
  markedChunks: number;
  /** Chunk files looked at. */
  scannedChunks: number;
  removedChunks: number;
  /** Bytes of the removed chunk files (compressed, with header). */
  removedBytes: number;
  /** Unreferenced chunks kept because they were written after the cutoff. */
  keptNew: number;
  /** Unreferenced chunks kept because a running backup or restore claims them. */
  keptClaimed: number;
  durationMs: number;
}

/** Chunks removed per synchronous check of the point directories. */
const BATCH = 256;

export async function gc(repo: Repository, opts: GcOptions = {}): Promise<GcResult> {
  const graceMs = opts.graceMs ?? 0;
  if (!Number.isFinite(graceMs) || graceMs < 0) throw new ReboundError('ERR_INVALID_ARGUMENT', `graceMs must be a non-negative number, not ${graceMs}`);
  opts.signal?.throwIfAborted();
  if (repo.s3) return gcS3(repo, opts);
  const started = Date.now();
  const start = startMarker(repo);
  try {
    return await collect(repo, opts, started, start.t0 - graceMs);
  } finally {
    fs.rmSync(start.file, { force: true });
  }
}

async function collect(repo: Repository, opts: GcOptions, started: number, cutoffMs: number): Promise<GcResult> {
  const { signal } = opts;
  const marker = new ReferenceMarker(repo);
  const stats = { scannedChunks: 0, removedChunks: 0, removedBytes: 0, keptNew: 0, keptClaimed: 0 };
  const report = (phase: GcProgress['phase'], done: number, total: number): void =>
    opts.onProgress?.({ phase, done, total, markedChunks: marker.markedChunks, scannedChunks: stats.scannedChunks, removedChunks: stats.removedChunks, removedBytes: stats.removedBytes });

  // ---- mark
  const catalogPoints = await repo.points();
  report('mark', 0, catalogPoints.length);
  for (const [i, m] of catalogPoints.entries()) {
    signal?.throwIfAborted();
    await marker.markPoint(m);
    report('mark', i + 1, catalogPoints.length);
  }
  await marker.markPointDirs(marker.unmarkedPointDirs(), signal);
  marker.markOpenIndexes();

  // ---- sweep
  const prefixes = readdirSafe(repo.store.dir).filter((n) => /^[0-9a-f]{2}$/.test(n));
  const seenPrefixes = new Set<string>();
  let current: string | undefined;
  let batch: Array<{ hex: string; size: number }> = [];
  report('sweep', 0, prefixes.length);

  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    // Bring the marks up to date until nothing new shows up, then decide and start every removal
    // of the batch without yielding in between (see the design notes).
    for (let fresh = marker.unmarkedPointDirs(); fresh.length > 0; fresh = marker.unmarkedPointDirs()) {
      await marker.markPointDirs(fresh, signal);
    }
    marker.markOpenIndexes();
    const removals: Array<Promise<void>> = [];
    for (const c of batch) {
      if (marker.has(c.hex)) continue;
      removals.push(
        repo.store.remove(c.hex, c.size).then((removed) => {
          if (removed) {
            stats.removedChunks++;
            stats.removedBytes += c.size;
          } else {
            stats.keptClaimed++;
          }
        }),
      );
    }
    batch = [];
    await Promise.all(removals);
  };

  for await (const c of repo.store.list()) {
    signal?.throwIfAborted();
    stats.scannedChunks++;
    const prefix = c.hex.slice(0, 2);
    if (prefix !== current) {
      if (current !== undefined) report('sweep', seenPrefixes.size, prefixes.length);
      seenPrefixes.add(prefix);
      current = prefix;
    }
    if (marker.has(c.hex)) continue;
    if (c.mtimeMs >= cutoffMs) {
      stats.keptNew++;
      continue;
    }
    batch.push({ hex: c.hex, size: c.size });
    if (batch.length >= BATCH) await flush();
  }
  signal?.throwIfAborted();
  await flush();
  report('sweep', prefixes.length, prefixes.length);

  return {
    startedAt: new Date(started).toISOString(),
    cutoffMs,
    points: marker.points,
    markedChunks: marker.markedChunks,
    ...stats,
    durationMs: Date.now() - started,
  };
}

/** The digests gc must keep, and which points and open indexes they came from. */
class ReferenceMarker {
  readonly #repo: Repository;
  readonly #marked = new Set<string>();
  /** Points marked (`vm/id`). */
  readonly #points = new Set<string>();
  /** Entries under vms/ that are not restore points (no point.json). */
  readonly #notPoints = new Set<string>();
  readonly #indexes = new WeakSet<FixedIndex>();
  #markedPoints = 0;

  constructor(repo: Repository) {
    this.#repo = repo;
  }

  get markedChunks(): number {
    return this.#marked.size;
  }

  get points(): number {
    return this.#markedPoints;
  }

  has(hex: string): boolean {
    return this.#marked.has(hex);
  }

  async markPoint(m: PointManifest): Promise<void> {
    const key = `${m.vm}/${m.id}`;
    if (this.#points.has(key)) return;
    const indexes: FixedIndex[] = [];
    for (const d of m.disks) {
      try {
        indexes.push(await this.#repo.readIndex(m, d.name));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(path.join(this.#repo.pointDir(m.vm, m.id), 'point.json'))) {
          return; // deleted while we looked: it references nothing any more
        }
        // Its chunks cannot be known, so no chunk may be deleted: stop.
        const code = err instanceof ReboundError ? err.code : 'ERR_REPO_IO';
        throw new ReboundError(code, `gc stopped: cannot read the index of ${m.vm}@${m.id} disk ${d.name}: ${(err as Error).message}`, { cause: err });
      }
    }
    for (const index of indexes) this.#markIndex(index);
    this.#points.add(key);
    this.#markedPoints++;
  }

  /** Marks points found by `unmarkedPointDirs()` from their manifests on disk. */
  async markPointDirs(dirs: Array<{ vm: string; id: string }>, signal: AbortSignal | undefined): Promise<void> {
    for (const { vm, id } of dirs) {
      signal?.throwIfAborted();
      const file = path.join(this.#repo.pointDir(vm, id), 'point.json');
      let body: Buffer;
      try {
        body = await fs.promises.readFile(file);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT' && code !== 'ENOTDIR') {
          throw new ReboundError('ERR_REPO_IO', `gc stopped: cannot read ${file}: ${(err as Error).message}`, { cause: err });
        }
        // Deleted meanwhile (then it is not listed again), or not a point at all: remember it.
        if (fs.existsSync(path.dirname(file))) this.#notPoints.add(`${vm}/${id}`);
        continue;
      }
      // Read the indexes from where they are, whatever the manifest says (and never list it again).
      await this.markPoint({ ...parseManifest(this.#repo.readLocalManifest(vm, id, body), file), vm, id });
    }
  }

  /** Synchronous on purpose: see the design notes. */
  markOpenIndexes(): void {
    for (const index of this.#repo.openIndexes()) {
      if (this.#indexes.has(index)) continue;
      this.#markIndex(index);
    }
  }

  /**
   * Directories under vms/ not marked yet (committed after the catalog was read, or missing from
   * it). Synchronous on purpose: see the design notes.
   */
  unmarkedPointDirs(): Array<{ vm: string; id: string }> {
    const out: Array<{ vm: string; id: string }> = [];
    const vmsDir = path.join(this.#repo.dir, 'vms');
    for (const vm of readdirSafe(vmsDir)) {
      for (const id of readdirSafe(path.join(vmsDir, vm))) {
        if (!this.#points.has(`${vm}/${id}`) && !this.#notPoints.has(`${vm}/${id}`)) out.push({ vm, id });
      }
    }
    return out;
  }

  #markIndex(index: FixedIndex): void {
    this.#indexes.add(index);
    for (let i = 0; i < index.count; i++) {
      const d = index.digest(i);
      if (d) this.#marked.add(digestHex(d));
    }
  }
}

/** Writes a start marker into repo/tmp; its mtime is T0 on the filesystem's clock. */
function startMarker(repo: Repository): { file: string; t0: number } {
  const file = path.join(repo.dir, 'tmp', `gc-${process.pid}-${crypto.randomBytes(4).toString('hex')}.start`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, new Date().toISOString());
  return { file, t0: fs.statSync(file).mtimeMs };
}

function readdirSafe(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
