/**
 * Garbage collection of an S3 repository shared by several gateways (gc.ts dispatches here).
 *
 * Design notes:
 *  - One gc or prune at a time across gateways: the maintenance lease (s3-lease.ts). A second one
 *    is refused with ERR_REPO_BUSY naming the holder.
 *  - Mark while backups run: every manifest in the bucket (listed, not the local catalog: other
 *    gateways add points), each disk's index, plus this gateway's open indexes (exports of pruned
 *    points keep their chunks, as in a local repository).
 *  - Then the lease's phase becomes 'sweep' and gc waits until no backup of any gateway is
 *    registered (new backups wait for the sweep to end, s3-lease.ts); it lists the manifests
 *    again and marks the points committed meanwhile. Only then does it delete: at that moment
 *    every chunk a committed point uses is marked, and no backup can commit a point that relies
 *    on an unmarked chunk until the sweep is over.
 *  - A chunk is deleted only if unmarked, older than the cutoff (the lease's LastModified on the
 *    store's own clock, minus `graceMs`), and not claimed by this gateway's restores.
 *  - Abandoned point prefixes (a claim and indexes but no point.json: a backup that lost the
 *    endpoint while committing) are removed in the sweep too.
 *  - An index that cannot be read stops gc before anything is deleted (its chunks are unknown).
 */
import { ReboundError } from '../errors.js';
import { digestHex, type FixedIndex } from './format.js';
import type { GcOptions, GcProgress, GcResult } from './gc.js';
import type { PointManifest } from './manifest.js';
import type { Repository } from './repository.js';
import { MAINTENANCE_LEASE, takeMaintenanceLease, waitForBackups } from './s3-lease.js';

/** Deletions in flight at once. */
const DELETE_CONCURRENCY = 16;
/** How long gc waits for running backups before giving up (nothing deleted), ms. */
export const DEFAULT_BACKUP_WAIT_MS = 3600_000;

export async function gcS3(repo: Repository, opts: GcOptions & { backupWaitMs?: number }): Promise<GcResult> {
  const s3 = repo.s3!;
  const { signal } = opts;
  const graceMs = opts.graceMs ?? 0;
  const started = Date.now();
  const lease = await takeMaintenanceLease(s3.objects, s3.link.gateway, 'gc', s3.leaseTiming);
  try {
    const t0 = (await s3.objects.head(MAINTENANCE_LEASE))?.mtimeMs ?? started;
    const cutoffMs = t0 - graceMs;
    const marked = new Set<string>();
    const markedPoints = new Set<string>();
    const stats = { scannedChunks: 0, removedChunks: 0, removedBytes: 0, keptNew: 0, keptClaimed: 0 };
    const report = (phase: GcProgress['phase'], done: number, total: number): void =>
      opts.onProgress?.({ phase, done, total, markedChunks: marked.size, scannedChunks: stats.scannedChunks, removedChunks: stats.removedChunks, removedBytes: stats.removedBytes });
    const markIndex = (index: FixedIndex): void => {
      for (let i = 0; i < index.count; i++) {
        const d = index.digest(i);
        if (d) marked.add(digestHex(d));
      }
    };
    const markAll = async (): Promise<PointManifest[]> => {
      const manifests = await repo.pointStore.listManifests();
      const fresh = manifests.filter((m) => !markedPoints.has(`${m.vm}/${m.id}`));
      report('mark', 0, fresh.length);
      for (const [i, m] of fresh.entries()) {
        signal?.throwIfAborted();
        const indexes: FixedIndex[] = [];
        let gone = false;
        for (const d of m.disks) {
          try {
            indexes.push(await repo.readIndex(m, d.name));
          } catch (err) {
            if (!(await repo.pointExists(m))) {
              gone = true; // pruned while we looked
              break;
            }
            const code = err instanceof ReboundError ? err.code : 'ERR_REPO_IO';
            throw new ReboundError(code, `gc stopped: cannot read the index of ${m.vm}@${m.id} disk ${d.name}: ${(err as Error).message}`, { cause: err });
          }
        }
        if (!gone) {
          for (const index of indexes) markIndex(index);
          markedPoints.add(`${m.vm}/${m.id}`);
        }
        report('mark', i + 1, fresh.length);
      }
      return manifests;
    };

    // ---- mark (backups may run)
    await markAll();
    // ---- no backup runs from here on; mark what was committed meanwhile
    await lease.setPhase('sweep');
    await waitForBackups(s3.objects, opts.backupWaitMs ?? DEFAULT_BACKUP_WAIT_MS, s3.leaseTiming, signal);
    const manifests = await markAll();
    const complete = new Set(manifests.map((m) => `vms/${m.vm}/${m.id}/`));

    // ---- sweep
    const candidates: Array<{ hex: string; size: number }> = [];
    report('sweep', 0, 1);
    for await (const c of repo.store.list()) {
      signal?.throwIfAborted();
      stats.scannedChunks++;
      if (marked.has(c.hex)) continue;
      if (c.mtimeMs >= cutoffMs) {
        stats.keptNew++;
        continue;
      }
      candidates.push({ hex: c.hex, size: c.size });
    }
    for (const index of repo.openIndexes()) markIndex(index);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < candidates.length) {
        signal?.throwIfAborted();
        const c = candidates[next++]!;
        if (marked.has(c.hex)) continue;
        if (await repo.store.remove(c.hex, c.size)) {
          stats.removedChunks++;
          stats.removedBytes += c.size;
        } else {
          stats.keptClaimed++;
        }
      }
    };
    await Promise.all(Array.from({ length: DELETE_CONCURRENCY }, worker));

    // Abandoned point prefixes: objects under vms/VM/ID/ of no complete point.
    const abandoned: string[] = [];
    for await (const o of s3.objects.list('vms/')) {
      const m = /^(vms\/[^/]+\/[^/]+\/)/.exec(o.key);
      if (m && !complete.has(m[1]!) && o.mtimeMs < cutoffMs) abandoned.push(o.key);
    }
    for (const key of abandoned) await s3.objects.delete(key);
    report('sweep', 1, 1);

    return {
      startedAt: new Date(started).toISOString(),
      cutoffMs,
      points: markedPoints.size,
      markedChunks: marked.size,
      ...stats,
      durationMs: Date.now() - started,
    };
  } finally {
    await lease.release().catch(() => undefined);
  }
}
