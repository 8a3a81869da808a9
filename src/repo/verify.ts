/**
 * Verify: `rebound verify` re-reads and re-hashes every chunk the selected restore points
 * reference and reports, for each bad chunk, every restore point, disk and chunk number it breaks.
 *
 * Design notes:
 *  - Pass 1 reads the selected points' indexes into one set of distinct digests (each chunk is
 *    checked once however many points share it), then checks them with a few concurrent
 *    `store.readChunk(digest, { full: true })` calls. That call decompresses and compares the full
 *    sha256 (not the fast check a chunk file also carries, format.ts) with the chunk's name; the
 *    shared cache (and an S3 repository's disk cache) is bypassed on purpose, it would answer from
 *    memory or local disk rather than from the repository.
 *  - Only if something is bad does pass 2 re-read indexes to find who references the bad chunks.
 *    It looks at *every* point in the repository, not just the selection: a bad chunk breaks all
 *    points that share it, and the operator needs the whole list. Keeping (point, disk, chunk#)
 *    references for every chunk during pass 1 would cost memory proportional to the repository.
 *  - Points may be pruned (and gc run) while verify runs. A point gone by pass 2 is not listed,
 *    and a problem no remaining point references is dropped: it breaks nothing.
 *  - An index or manifest that cannot be read is reported in `indexProblems` (its chunks are
 *    unknown, so it cannot be verified) and makes the report not ok; verify itself goes on.
 */
import { errorText, isReboundError, ReboundError } from '../errors.js';
import { digestHex } from './format.js';
import type { PointManifest } from './manifest.js';
import type { Repository } from './repository.js';

export type ChunkErrorKind = 'corrupt' | 'missing' | 'unreadable';

export interface VerifyOptions {
  /** Only this VM's points (all VMs if omitted). */
  vm?: string;
  /** Only this point of `vm`: an id or 'latest'. Needs `vm`. */
  point?: string;
  signal?: AbortSignal;
  onProgress?: (p: VerifyProgress) => void;
  /** Chunks checked at once (default 4). */
  concurrency?: number;
}

export interface VerifyProgress {
  /** 'indexes': done/total count disk indexes read; 'chunks': distinct chunks checked. */
  phase: 'indexes' | 'chunks';
  done: number;
  total: number;
  /** Uncompressed bytes of the chunks verified good so far. */
  bytes: number;
  problems: number;
}

export interface VerifyAffected {
  vm: string;
  point: string;
  disk: string;
  /** Chunk numbers within the disk (chunk i covers bytes [i*chunkSize, (i+1)*chunkSize)). */
  chunkIndexes: number[];
}

export interface VerifyProblem {
  /** The chunk's digest (sha256 hex); its file is `store.pathOf(chunk)`. */
  chunk: string;
  error: ChunkErrorKind;
  message: string;
  /** Every restore point in the repository that references the chunk, selected or not. */
  affected: VerifyAffected[];
}

export interface VerifyIndexProblem {
  vm: string;
  point: string;
  disk: string;
  message: string;
}

export interface VerifyReport {
  /** Restore points verified. */
  points: number;
  /** Distinct chunks checked. */
  chunks: number;
  /** Uncompressed bytes of the chunks found good. */
  bytes: number;
  ok: boolean;
  problems: VerifyProblem[];
  indexProblems: VerifyIndexProblem[];
  durationMs: number;
}

export async function verify(repo: Repository, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const started = Date.now();
  const { signal } = opts;
  const concurrency = opts.concurrency ?? 4;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new ReboundError('ERR_INVALID_ARGUMENT', `concurrency must be a positive integer, not ${concurrency}`);
  signal?.throwIfAborted();
  const selected = await selectPoints(repo, opts);

  // ---- pass 1: distinct digests of the selection
  const digests = new Set<string>();
  const indexProblems: VerifyIndexProblem[] = [];
  const totalIndexes = selected.reduce((n, m) => n + m.disks.length, 0);
  let indexesDone = 0;
  let points = 0;
  let bytes = 0;
  const problems = new Map<string, { error: ChunkErrorKind; message: string }>();
  const report = (phase: VerifyProgress['phase'], done: number, total: number): void =>
    opts.onProgress?.({ phase, done, total, bytes, problems: problems.size });

  report('indexes', 0, totalIndexes);
  for (const m of selected) {
    let gone = false;
    for (const d of m.disks) {
      signal?.throwIfAborted();
      try {
        const index = await repo.readIndex(m, d.name);
        for (let i = 0; i < index.count; i++) {
          const digest = index.digest(i);
          if (digest) digests.add(digestHex(digest));
        }
      } catch (err) {
        if (!(await repo.pointExists(m).catch(() => true))) {
          gone = true; // pruned while we looked
          break;
        }
        indexProblems.push({ vm: m.vm, point: m.id, disk: d.name, message: errorText(err) });
      }
      report('indexes', ++indexesDone, totalIndexes);
    }
    if (!gone) points++;
  }

  // ---- chunks
  let checked = 0;
  report('chunks', 0, digests.size);
  const queue = digests.values();
  const worker = async (): Promise<void> => {
    for (let next = queue.next(); !next.done; next = queue.next()) {
      signal?.throwIfAborted();
      const hex = next.value;
      try {
        const raw = await repo.store.readChunk(Buffer.from(hex, 'hex'), { full: true });
        bytes += raw.length;
      } catch (err) {
        problems.set(hex, { error: classify(err), message: errorText(err) });
      }
      report('chunks', ++checked, digests.size);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  signal?.throwIfAborted();

  // ---- pass 2: who references the bad chunks
  const affected = problems.size > 0 ? await findReferences(repo, new Set(problems.keys()), signal) : new Map<string, VerifyAffected[]>();
  const list: VerifyProblem[] = [];
  for (const [chunk, p] of problems) {
    const refs = affected.get(chunk);
    if (refs?.length) list.push({ chunk, error: p.error, message: p.message, affected: refs });
  }
  list.sort((a, b) => compareRef(a.affected[0]!, b.affected[0]!) || a.chunk.localeCompare(b.chunk));

  return {
    points,
    chunks: digests.size,
    bytes,
    ok: list.length === 0 && indexProblems.length === 0,
    problems: list,
    indexProblems,
    durationMs: Date.now() - started,
  };
}

async function selectPoints(repo: Repository, opts: VerifyOptions): Promise<PointManifest[]> {
  if (opts.vm === undefined) {
    if (opts.point !== undefined) throw new ReboundError('ERR_INVALID_ARGUMENT', 'verify: a point needs its VM');
    return repo.points();
  }
  if (opts.point !== undefined) return [await repo.point(opts.vm, opts.point)];
  const ps = await repo.points(opts.vm);
  if (ps.length === 0) await repo.point(opts.vm); // checks the name, throws ERR_VM_NOT_FOUND
  return ps;
}

/** For each bad digest: every (point, disk) of the repository that references it, with chunk numbers. */
async function findReferences(repo: Repository, bad: Set<string>, signal: AbortSignal | undefined): Promise<Map<string, VerifyAffected[]>> {
  const out = new Map<string, VerifyAffected[]>();
  for (const m of await repo.points()) {
    for (const d of m.disks) {
      signal?.throwIfAborted();
      let index;
      try {
        index = await repo.readIndex(m, d.name);
      } catch {
        continue; // deleted meanwhile, or already in indexProblems if it was selected
      }
      const hits = new Map<string, number[]>();
      for (let i = 0; i < index.count; i++) {
        const digest = index.digest(i);
        if (!digest) continue;
        const hex = digestHex(digest);
        if (!bad.has(hex)) continue;
        let list = hits.get(hex);
        if (!list) hits.set(hex, (list = []));
        list.push(i);
      }
      for (const [hex, chunkIndexes] of hits) {
        let refs = out.get(hex);
        if (!refs) out.set(hex, (refs = []));
        refs.push({ vm: m.vm, point: m.id, disk: d.name, chunkIndexes });
      }
    }
  }
  return out;
}

function classify(err: unknown): ChunkErrorKind {
  if (isReboundError(err)) {
    if (err.code === 'ERR_CHUNK_CORRUPT') return 'corrupt';
    if (err.code === 'ERR_CHUNK_MISSING') return 'missing';
  }
  return 'unreadable';
}

function compareRef(a: VerifyAffected, b: VerifyAffected): number {
  return a.vm.localeCompare(b.vm) || a.point.localeCompare(b.point) || a.disk.localeCompare(b.disk) || a.chunkIndexes[0]! - b.chunkIndexes[0]!;
}
