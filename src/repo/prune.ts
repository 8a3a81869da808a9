/**
 * Prune: retention of restore points (`rebound prune VM --keep-last N --keep-daily N ...`).
 *
 * Design notes:
 *  - `planPrune` is pure. The rules are restic's (`forget --keep-*`), which Proxmox Backup Server
 *    also follows in spirit: points are sorted newest first; keep-last N keeps the N newest;
 *    keep-daily N keeps the newest point of each of the N newest UTC days *that have points*
 *    (days without a backup do not use up the count), and likewise ISO weeks and calendar
 *    months. Each rule is evaluated on its own and a point kept by any rule is kept, with every
 *    rule that kept it as a reason. (PBS instead lets later rules skip periods an earlier rule
 *    already covers, so `last 1 + daily 2` keeps three days there, two here.) restic's newer
 *    "also keep the oldest point while a rule has count left" is deliberately not done.
 *  - Periods are counted from the points, not from `now`: a repository that has not been backed
 *    up for a month is not wiped by `keep-daily 7`. `now` only stamps the plan.
 *  - No rule at all (or only zero counts) keeps everything (reason 'no-policy'); `prune()`
 *    refuses such a policy. Unknown policy keys are rejected so a typo cannot silently turn a
 *    rule off. A point whose time cannot be read is kept ('unknown-time').
 *  - `prune()` never deletes a pinned point (a recovery session runs from it): pinned points are
 *    kept with reason 'pinned', checked again right before each deletion. Deleting a point only
 *    removes its manifest and index; gc frees its chunks later.
 */
import { ReboundError } from '../errors.js';
import type { PointManifest } from './manifest.js';
import type { Repository } from './repository.js';
import { takeMaintenanceLease } from './s3-lease.js';

export interface RetentionPolicy {
  keepLast?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
}

export type KeepReason = 'last' | 'daily' | 'weekly' | 'monthly' | 'pinned' | 'no-policy' | 'unknown-time';

export interface PruneKeep {
  vm: string;
  id: string;
  createdAt: string;
  reasons: KeepReason[];
}

export interface PruneRemove {
  vm: string;
  id: string;
  createdAt: string;
}

export interface PrunePlan {
  /** When the plan was made (`now`). */
  at: string;
  /** Oldest first, like `repo.points()`. */
  keep: PruneKeep[];
  remove: PruneRemove[];
}

export interface PruneProgress {
  /** Points deleted so far / to delete. */
  done: number;
  total: number;
}

export interface PruneOptions {
  /** Plan only: report what would be removed, delete nothing. */
  dryRun?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: PruneProgress) => void;
  now?: Date;
}

export interface PruneResult extends PrunePlan {
  vm: string;
  dryRun: boolean;
  /** Ids actually deleted (empty for a dry run). */
  removed: string[];
}

const RULES: Array<{ key: keyof RetentionPolicy; reason: KeepReason; bucket: (t: Date, i: number) => string }> = [
  { key: 'keepLast', reason: 'last', bucket: (_t, i) => String(i) },
  { key: 'keepDaily', reason: 'daily', bucket: (t) => t.toISOString().slice(0, 10) },
  { key: 'keepWeekly', reason: 'weekly', bucket: isoWeek },
  { key: 'keepMonthly', reason: 'monthly', bucket: (t) => t.toISOString().slice(0, 7) },
];

/** Which points a retention policy keeps (see the design notes). Points of several VMs are judged per VM. */
export function planPrune(points: readonly PointManifest[], policy: RetentionPolicy, now: Date = new Date()): PrunePlan {
  const counts = checkPolicy(policy);
  const reasons = new Map<PointManifest, KeepReason[]>();
  const byVm = new Map<string, Array<{ m: PointManifest; t: Date }>>();
  for (const m of points) {
    const t = pointTime(m);
    if (!t) reasons.set(m, ['unknown-time']);
    else if (counts.size === 0) reasons.set(m, ['no-policy']);
    else byVm.set(m.vm, [...(byVm.get(m.vm) ?? []), { m, t }]);
  }
  for (const list of byVm.values()) {
    list.sort((a, b) => b.t.getTime() - a.t.getTime() || b.m.id.localeCompare(a.m.id));
    for (const rule of RULES) {
      let left = counts.get(rule.key) ?? 0;
      let last: string | undefined;
      for (const [i, { m, t }] of list.entries()) {
        if (left === 0) break;
        const bucket = rule.bucket(t, i);
        if (bucket === last) continue;
        last = bucket;
        left--;
        reasons.set(m, [...(reasons.get(m) ?? []), rule.reason]);
      }
    }
  }
  const plan: PrunePlan = { at: now.toISOString(), keep: [], remove: [] };
  for (const m of points) {
    const r = reasons.get(m);
    if (r) plan.keep.push({ vm: m.vm, id: m.id, createdAt: m.createdAt, reasons: r });
    else plan.remove.push({ vm: m.vm, id: m.id, createdAt: m.createdAt });
  }
  return plan;
}

/** Applies a retention policy to one VM's points; pinned points are never deleted. */
export async function prune(repo: Repository, vm: string, policy: RetentionPolicy, opts: PruneOptions = {}): Promise<PruneResult> {
  const { signal } = opts;
  signal?.throwIfAborted();
  if (checkPolicy(policy).size === 0) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', 'prune needs at least one retention rule (keepLast, keepDaily, keepWeekly, keepMonthly); refusing to decide without one');
  }
  // A shared bucket: other gateways may have added points since the catalog was read.
  const points = repo.s3 ? await repo.refreshVm(vm) : await repo.points(vm);
  if (points.length === 0) await repo.point(vm); // checks the name, throws ERR_VM_NOT_FOUND
  const plan = planPrune(points, policy, opts.now);
  const keep = new Map(plan.keep.map((k) => [k.id, k]));
  const pinned = (id: string, createdAt: string): void => {
    const k = keep.get(id);
    if (k) {
      if (!k.reasons.includes('pinned')) k.reasons.push('pinned');
    } else {
      keep.set(id, { vm, id, createdAt, reasons: ['pinned'] });
    }
  };
  for (const k of plan.keep) if (repo.isPinned(vm, k.id)) pinned(k.id, k.createdAt);
  let remove = plan.remove.filter((r) => {
    if (!repo.isPinned(vm, r.id)) return true;
    pinned(r.id, r.createdAt);
    return false;
  });

  const removed: string[] = [];
  // In a shared bucket one gc or prune runs at a time (s3-lease.ts); a dry run changes nothing.
  const lease = repo.s3 && !opts.dryRun ? await takeMaintenanceLease(repo.s3.objects, repo.s3.link.gateway, 'prune', repo.s3.leaseTiming) : undefined;
  try {
    if (!opts.dryRun) {
      opts.onProgress?.({ done: 0, total: remove.length });
      for (const r of remove) {
        signal?.throwIfAborted();
        // Checked again: a recovery session may have pinned it since the plan was made.
        if (repo.isPinned(vm, r.id)) pinned(r.id, r.createdAt);
        else {
          await repo.deletePoint(vm, r.id);
          removed.push(r.id);
        }
        opts.onProgress?.({ done: removed.length, total: remove.length });
      }
      remove = remove.filter((r) => !keep.has(r.id));
    }
  } finally {
    await lease?.release().catch(() => undefined);
  }
  const order = new Map(points.map((m, i) => [m.id, i]));
  const keepList = [...keep.values()].sort((a, b) => order.get(a.id)! - order.get(b.id)!);
  return { vm, dryRun: opts.dryRun ?? false, at: plan.at, keep: keepList, remove, removed };
}

function checkPolicy(policy: RetentionPolicy): Map<keyof RetentionPolicy, number> {
  const counts = new Map<keyof RetentionPolicy, number>();
  const known = new Set<string>(RULES.map((r) => r.key));
  for (const [key, value] of Object.entries(policy)) {
    if (!known.has(key)) throw new ReboundError('ERR_INVALID_ARGUMENT', `unknown retention rule '${key}' (known: ${[...known].join(', ')})`);
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `retention rule ${key} must be a whole number >= 0, not ${String(value)}`);
    }
    if (value > 0) counts.set(key as keyof RetentionPolicy, value);
  }
  return counts;
}

/** The point's time: createdAt, else its id (UTC, ISO basic). */
function pointTime(m: PointManifest): Date | undefined {
  const t = Date.parse(m.createdAt);
  if (!Number.isNaN(t)) return new Date(t);
  const x = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(m.id);
  if (!x) return undefined;
  const d = new Date(Date.UTC(+x[1]!, +x[2]! - 1, +x[3]!, +x[4]!, +x[5]!, +x[6]!));
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** ISO 8601 week of a UTC time, e.g. 2025-W01 (weeks start on Monday; week 1 holds the first Thursday). */
export function isoWeek(t: Date): string {
  const d = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate()));
  const weekday = d.getUTCDay() || 7;
  d.setUTCDate(d.getUTCDate() + 4 - weekday); // the Thursday of this week decides the year
  const year = d.getUTCFullYear();
  const week = Math.ceil(((d.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7);
  return `${year}-W${String(week).padStart(2, '0')}`;
}
