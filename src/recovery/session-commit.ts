/**
 * `rebound commit SESSION`: stores what the session's disks hold now (base + overlay, or the
 * production copy after a switch) as a new restore point of the VM, while the VM keeps running.
 *
 * Every disk is frozen at once (FreezeLayer: copy-before-write), so the point is crash-consistent
 * across disks. Chunks the overlay never touched are taken from the session's restore point
 * without reading them; the rest is read from the frozen view and deduplicated as in any backup.
 */
import { backup, type BackupOptions } from '../repo/ingest.js';
import type { PointManifest } from '../repo/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { BackupSource, Range } from '../repo/sources.js';
import type { RecoverySession } from './session.js';
import type { SessionDisk } from './session-disk.js';
import { overlayAuthoritative } from './disk-state.js';

export interface CommitRequest {
  tags?: string[];
}

function frozenSource(s: RecoverySession, d: SessionDisk, changed: Range[] | undefined): BackupSource {
  // The ingest reads whole chunks at chunk boundaries, each once; the freeze unit is the chunk size.
  return {
    description: `session:${s.name}/${d.name}`,
    device: d.stack.freeze.frozenView(),
    ...(changed ? { changedRanges: () => Promise.resolve(changed) } : {}),
  };
}

/** Units outside the changed ranges are not read (their chunks are reused): nothing to save for them. */
function releaseUnchanged(d: SessionDisk, unit: number, changed: Range[]): void {
  const units = Math.ceil(d.size / unit);
  const touched = new Uint8Array(units);
  for (const [off, len] of changed) for (let u = Math.floor(off / unit); u <= Math.floor((off + len - 1) / unit); u++) touched[u] = 1;
  for (let u = 0; u < units; u++) if (!touched[u]) d.stack.freeze.release(u);
}

/** Stores the point; the caller records it in the session (SessionManager.commit). */
export async function commitSession(repo: Repository, s: RecoverySession, req: CommitRequest, opts: BackupOptions = {}): Promise<PointManifest> {
  const unit = repo.chunkSize;
  // Freeze every disk (each freeze waits for that disk's writes in flight), then collect sources.
  const frozen: SessionDisk[] = [];
  try {
    for (const d of s.disks) {
      await d.stack.freeze.freeze(unit);
      frozen.push(d);
    }
    // Ranges the overlays shadow, taken after the freeze: every write before it is included.
    // After a switch there is no overlay: the whole disk is read (and deduplicated).
    const allOverlay = s.disks.every((d) => d.overlay && overlayAuthoritative(d.state));
    const sources = s.disks.map((d) => {
      if (!allOverlay) return frozenSource(s, d, undefined);
      const changed = d.overlay!.changedRanges();
      releaseUnchanged(d, unit, changed);
      return frozenSource(s, d, changed);
    });
    const m = await backup(
      repo,
      {
        vm: s.record.vm,
        disks: s.disks.map((d, i) => ({ name: d.name, source: sources[i]! })),
        label: 'crash',
        tags: ['session-commit', `session:${s.name}`, ...(req.tags ?? [])],
        ...(allOverlay ? { basePoint: s.record.pointId } : {}),
      },
      opts,
    );
    return m;
  } finally {
    for (const d of frozen) d.stack.freeze.thaw();
  }
}
