/**
 * Ingest: `rebound backup` — reads disks from their sources into a new restore point.
 *
 * Per disk, every chunk is classified first:
 *  - clean: a dirty bitmap says it did not change since the previous restore point -> that
 *    point's digest is reused without reading (incremental);
 *  - zero: the source's extents say the whole chunk reads as zero (NBD base:allocation) -> not read;
 *  - read: everything else is read (several chunks in flight), hashed; an all-zero chunk is
 *    recorded as zero, any other is stored unless the repository already has it (dedup). The zero
 *    check and the sha256 run on a chunk worker (chunk-worker.ts; the buffer is moved, not
 *    copied), and so do the compression and the fast check of a new chunk (`encode`): the event
 *    loop only moves data and writes files.
 * Every restore point is still a complete map. The backup is built in repo/tmp and committed
 * atomically (Repository.commitPoint); an error or abort removes the temp directory, so an
 * interrupted backup leaves no half restore point (in a bucket too: the manifest is written last,
 * s3-points.ts). Progress is reported per chunk.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../errors.js';
import { chunkPool, hashOnWorker } from './chunk-worker.js';
import { chunkDigest, type RepoKeys } from './repo-crypto.js';
import { checkName, FixedIndex, pointIdFor } from './format.js';
import { LABELS, POINT_FORMAT, POINT_VERSION, type BackupLabel, type DiskManifest, type PointManifest } from './manifest.js';
import type { Repository } from './repository.js';
import { writeFileDurable } from '../util/durable-file.js';
import { openSource, type BackupSource, type Range } from './sources.js';
import type { PathGate } from '../util/path-policy.js';
import type { BlockDevice } from '../blockdev/types.js';

export interface BackupRequest {
  vm: string;
  /** SOURCE: a path or NBD URI, or an open BackupSource (closed by the backup). */
  disks: Array<{ name: string; source: string | BackupSource }>;
  /** The point unchanged ranges come from (sources with changedRanges); default the VM's latest. */
  basePoint?: string;
  label?: BackupLabel;
  tags?: string[];
  /** Paths of VM configuration files to store with the point. */
  configs?: string[];
  /** Read only the ranges this QEMU dirty bitmap marks (NBD sources). */
  dirtyBitmap?: string;
  /** Chunks read concurrently per disk. */
  concurrency?: number;
}

export interface BackupProgress {
  disk: string;
  totalBytes: number;
  doneBytes: number;
  readBytes: number;
  storedBytes: number;
}

export interface BackupOptions {
  signal?: AbortSignal;
  onProgress?: (p: BackupProgress) => void;
  /**
   * A request's path policy for its source files and config files (util/path-policy.ts): each is
   * checked as opened. Without one (in-process callers: the demo, --export) nothing is checked.
   */
  sourceGate?: PathGate;
}

/**
 * Chunks in flight per disk: each passes the source read, a chunk worker (hash), the existence
 * check, a chunk worker again (compress) and the file writes, so a few must overlap to keep both
 * cores busy (1 GiB VM-like image, 2 cores, in-process: 4 in flight 4.3-4.7 s, then in one
 * series 8: 3.8 s, 16: 3.5 s, 32: 3.6 s).
 */
const BACKUP_INFLIGHT = 8;
/** The same for a repository in a bucket (each is a HEAD and maybe a PUT). */
const S3_BACKUP_INFLIGHT = 16;

/** Largest VM configuration file stored with a point (they are a few KiB: .vmx, libvirt XML, .conf). */
const CONFIG_FILE_MAX = 16 * 1024 * 1024;

export async function backup(repo: Repository, req: BackupRequest, opts: BackupOptions = {}): Promise<PointManifest> {
  checkName('VM', req.vm);
  if (req.disks.length === 0) throw new ReboundError('ERR_INVALID_ARGUMENT', 'a backup needs at least one --disk NAME=SOURCE');
  const seen = new Set<string>();
  for (const d of req.disks) {
    checkName('disk', d.name);
    if (seen.has(d.name)) throw new ReboundError('ERR_INVALID_ARGUMENT', `disk '${d.name}' is given twice`);
    seen.add(d.name);
  }
  const label = req.label ?? 'crash';
  if (!LABELS.includes(label)) throw new ReboundError('ERR_INVALID_ARGUMENT', `label must be one of ${LABELS.join(', ')}`);
  for (const c of req.configs ?? []) {
    if (!fs.existsSync(c)) throw new ReboundError('ERR_INVALID_ARGUMENT', `config file ${c} does not exist`);
    // A device or FIFO would be read without end (or block): config files are regular files.
    if (!fs.statSync(c).isFile()) throw new ReboundError('ERR_INVALID_ARGUMENT', `config file ${c} is not a regular file`);
  }

  const started = Date.now();
  const previous = req.basePoint ? await repo.point(req.vm, req.basePoint) : (await repo.points(req.vm)).at(-1);
  // An incremental reuses the previous point's chunks without reading them: keep that point
  // (and so its chunks) from being pruned and collected while this backup runs.
  const unpin = previous && req.dirtyBitmap ? repo.pin(previous.vm, previous.id) : undefined;
  // In a shared bucket: registered as a running backup, so no gateway's gc sweeps meanwhile.
  const endBackup = await repo.beginBackup(opts.signal);
  const tmp = repo.tempDir();
  const claims = repo.store.claim();
  try {
    const disks: DiskManifest[] = [];
    for (const d of req.disks) {
      opts.signal?.throwIfAborted();
      const source = typeof d.source === 'string' ? await openSource(d.source, { dirtyBitmap: req.dirtyBitmap, gate: opts.sourceGate }) : d.source;
      try {
        disks.push(await backupDisk(repo, source, d.name, previous, req, tmp, claims.set, opts));
      } finally {
        await source.device.close().catch(() => undefined);
      }
    }
    const configs: string[] = [];
    if (req.configs?.length) {
      fs.mkdirSync(path.join(tmp, 'config'));
      for (const c of req.configs) {
        const name = path.basename(c);
        writeFileDurable(path.join(tmp, 'config', name), readConfigFile(c, opts.sourceGate));
        configs.push(name);
      }
    }
    opts.signal?.throwIfAborted();
    await repo.store.syncAll();
    const manifest: PointManifest = {
      format: POINT_FORMAT,
      version: POINT_VERSION,
      vm: req.vm,
      id: await uniqueId(repo, req.vm, new Date()),
      createdAt: new Date().toISOString(),
      label,
      tags: req.tags ?? [],
      disks,
      configs,
      durationMs: Date.now() - started,
    };
    return await repo.commitPoint(tmp, manifest);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    claims.release();
    unpin?.();
    await endBackup().catch(() => undefined);
  }
}

async function backupDisk(
  repo: Repository,
  source: BackupSource,
  name: string,
  previous: PointManifest | undefined,
  req: BackupRequest,
  tmp: string,
  claims: Set<string>,
  opts: BackupOptions,
): Promise<DiskManifest> {
  const cs = repo.chunkSize;
  const dev = source.device;
  const index = new FixedIndex(dev.size, cs);
  const prevDisk = previous?.disks.find((x) => x.name === name && x.size === dev.size && x.chunkSize === cs);
  const prevIndex = prevDisk && previous ? await repo.readIndex(previous, name) : undefined;

  // Classify chunks: clean (reuse), zero (skip), or to read.
  const toRead = new Uint8Array(index.count).fill(1);
  let incremental: DiskManifest['incremental'];
  const changed = req.dirtyBitmap && source.dirtyRanges ? () => source.dirtyRanges!() : source.changedRanges ? () => source.changedRanges!() : undefined;
  if (changed && prevIndex) {
    const dirty = chunkFlags(await changed(), index, 'any');
    let dirtyChunks = 0;
    for (let i = 0; i < index.count; i++) {
      if (dirty[i]) dirtyChunks++;
      else {
        toRead[i] = 0;
        const d = prevIndex.digest(i);
        if (d) claims.add(Buffer.from(d).toString('hex'));
        index.setDigest(i, d);
      }
    }
    incremental = { bitmap: req.dirtyBitmap ?? 'session-overlay', basePoint: previous!.id, dirtyChunks };
  }
  if (dev.capabilities().canExtents) {
    const zero = chunkFlags(await zeroRanges(dev), index, 'all');
    for (let i = 0; i < index.count; i++) {
      if (toRead[i] && zero[i]) {
        toRead[i] = 0;
        index.setDigest(i, undefined);
      }
    }
  }

  const progress: BackupProgress = { disk: name, totalBytes: dev.size, doneBytes: 0, readBytes: 0, storedBytes: 0 };
  let zeroChunks = 0;
  let newChunks = 0;
  for (let i = 0; i < index.count; i++) if (!toRead[i]) progress.doneBytes += index.chunkLength(i);
  opts.onProgress?.({ ...progress });

  let next = 0;
  const absent = new AbsenceGuess();
  const worker = async (): Promise<void> => {
    // This reader's buffer, reused chunk after chunk (a fresh 1 MiB per chunk cost page faults and
    // garbage collection). It is shared memory: a chunk worker hashes it, and a local store's
    // worker compresses and writes it, in place (nothing copied or moved per chunk).
    let spare: Buffer | undefined;
    for (;;) {
      while (next < index.count && !toRead[next]) next++;
      if (next >= index.count) return;
      const i = next++;
      opts.signal?.throwIfAborted();
      const len = index.chunkLength(i);
      const read = spare?.length === len ? spare : Buffer.from(new SharedArrayBuffer(len));
      spare = undefined;
      await dev.read(read, i * cs);
      progress.readBytes += len;
      const { zero, digest } = await hashChunk(read, repo.store.keys);
      opts.signal?.throwIfAborted();
      if (zero || !digest) {
        index.setDigest(i, undefined);
      } else {
        const prev = prevIndex?.digest(i);
        const expectNew = !(prev && Buffer.compare(prev, digest) === 0) && absent.likely();
        const put = await repo.store.put(digest, read, claims, { expectNew });
        if (expectNew) absent.record(put.stored);
        if (put.stored) {
          newChunks++;
          progress.storedBytes += put.bytes;
        }
        index.setDigest(i, digest);
      }
      spare = read; // put() is done with it (a store copies or writes what it keeps)
      progress.doneBytes += len;
      opts.onProgress?.({ ...progress });
    }
  };
  // Every worker settles before an error is thrown: none may still write a chunk (into repo/tmp)
  // after the caller cleaned up.
  const settled = await Promise.allSettled(Array.from({ length: req.concurrency ?? (repo.s3 ? S3_BACKUP_INFLIGHT : BACKUP_INFLIGHT) }, worker));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  for (let i = 0; i < index.count; i++) if (!index.digest(i)) zeroChunks++;

  const indexFile = `${name}.fidx`;
  writeFileDurable(path.join(tmp, indexFile), index.encode());
  return {
    name,
    size: dev.size,
    chunkSize: cs,
    index: indexFile,
    source: source.description,
    chunks: index.count,
    zeroChunks,
    newChunks,
    newBytes: progress.storedBytes,
    readBytes: progress.readBytes,
    ...(incremental ? { incremental } : {}),
  };
}

/** Ranges the device's extents say read as zeroes (the device answers short; this loops). */
async function zeroRanges(dev: BlockDevice): Promise<Range[]> {
  const out: Range[] = [];
  let pos = 0;
  while (pos < dev.size) {
    const start = pos;
    for (const e of await dev.extents(pos, dev.size - pos)) {
      if (e.offset !== pos || !(e.length > 0)) break;
      const len = Math.min(e.length, dev.size - pos);
      if (e.zero) {
        const last = out[out.length - 1];
        if (last && last[0] + last[1] === pos) last[1] += len;
        else out.push([pos, len]);
      }
      pos += len;
    }
    if (pos === start) throw new ReboundError('ERR_BACKUP_SOURCE', `${dev.name} answered no extents at ${pos}`);
  }
  return out;
}

/** Per chunk: does `ranges` touch it ('any') or cover it entirely ('all')? */
function chunkFlags(ranges: Range[], index: FixedIndex, mode: 'any' | 'all'): Uint8Array {
  const cs = index.chunkSize;
  const flags = new Uint8Array(index.count);
  if (mode === 'any') {
    for (const [off, len] of ranges) {
      for (let i = Math.floor(off / cs); i <= Math.floor((off + len - 1) / cs) && i < index.count; i++) flags[i] = 1;
    }
    return flags;
  }
  const covered = new Float64Array(index.count);
  for (const [off, len] of ranges) {
    let pos = off;
    while (pos < off + len) {
      const i = Math.floor(pos / cs);
      const e = Math.min(off + len, (i + 1) * cs);
      covered[i]! += e - pos;
      pos = e;
    }
  }
  for (let i = 0; i < index.count; i++) flags[i] = covered[i]! >= index.chunkLength(i) ? 1 : 0;
  return flags;
}

/**
 * Whether a chunk that the disk's previous point did not have at its place is likely absent from
 * the store (then put() may create it with one conditional request, s3-chunk-store.ts): yes until,
 * after 16 such chunks, more than a quarter of them turned out to be there (a new VM deduplicating
 * against another's chunks, data moved within the disk); then no for the rest of the disk, so
 * such a backup checks before it uploads instead of uploading what the store already has.
 */
class AbsenceGuess {
  #tries = 0;
  #found = 0;

  likely(): boolean {
    return this.#tries < 16 || this.#found * 4 <= this.#tries;
  }

  record(stored: boolean): void {
    this.#tries++;
    if (!stored) this.#found++;
  }
}

/**
 * Zero check and digest of a chunk (sha256, or HMAC-SHA256 with an encrypted repository's id key):
 * on a chunk worker, which reads the reader's shared buffer in place, or here if workers are off.
 */
async function hashChunk(buf: Buffer, keys: RepoKeys | undefined): Promise<{ zero: boolean; digest: Buffer | undefined }> {
  const pool = chunkPool();
  if (pool) return hashOnWorker(pool, buf, keys?.idKey);
  if (isZero(buf)) return { zero: true, digest: undefined };
  return { zero: false, digest: chunkDigest(buf, keys) };
}

const ZEROES = Buffer.alloc(1024 * 1024);

function isZero(b: Buffer): boolean {
  for (let pos = 0; pos < b.length; pos += ZEROES.length) {
    const n = Math.min(ZEROES.length, b.length - pos);
    if (!b.subarray(pos, pos + n).equals(ZEROES.subarray(0, n))) return false;
  }
  return true;
}

async function uniqueId(repo: Repository, vm: string, now: Date): Promise<string> {
  const base = pointIdFor(now);
  const taken = new Set((await repo.points(vm)).map((p) => p.id));
  if (!taken.has(base)) return base;
  for (let n = 2; ; n++) if (!taken.has(`${base}-${n}`)) return `${base}-${n}`;
}

/** Reads a VM config file through one descriptor: a regular file, admitted by the gate, bounded. */
function readConfigFile(file: string, gate: PathGate | undefined): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    gate?.opened(fd);
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new ReboundError('ERR_INVALID_ARGUMENT', `config file ${file} is not a regular file`);
    if (st.size > CONFIG_FILE_MAX) throw new ReboundError('ERR_INVALID_ARGUMENT', `config file ${file} has ${st.size} bytes; at most ${CONFIG_FILE_MAX} are stored`);
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
