/**
 * The publication catalog rendered as iSCSI targets (its 'iscsi' view):
 *  - a recovery session:  `iqn.2026-12.org.rebound:session.NAME`, one LUN per disk (writable);
 *  - a restore point:     `iqn.2026-12.org.rebound:point.VM.POINT`, one LUN per disk (read-only),
 *                         and `...:point.VM.latest` for the VM's newest point;
 *  - an ad-hoc export:    `iqn.2026-12.org.rebound:export.NAME`, one LUN.
 * LUNs are numbered from 0 in disk-name order, so a disk keeps its LUN while its session lives.
 * IQNs are lowercase (RFC 3722 compares them case-insensitively) and keep only a-z 0-9 . - :
 * from the names; any other character becomes '-'. Two names that differ only in such characters
 * or in case would collide: the first in catalog order wins, the other is not offered (and logged
 * once by the server).
 */
import type { CatalogEntry, CatalogView } from '../exports/catalog.js';

export const IQN_PREFIX = 'iqn.2026-12.org.rebound';

export interface IscsiTarget {
  readonly name: string;
  /** LUN n is luns[n]. */
  readonly luns: readonly CatalogEntry[];
  readonly writable: boolean;
}

export function iqnPart(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9.\-:]/g, '-');
}

export const sessionIqn = (session: string): string => `${IQN_PREFIX}:session.${iqnPart(session)}`;
export const pointIqn = (vm: string, point: string): string => `${IQN_PREFIX}:point.${iqnPart(vm)}.${iqnPart(point)}`;
export const exportIqn = (name: string): string => `${IQN_PREFIX}:export.${iqnPart(name)}`;

const byDisk = (a: CatalogEntry, b: CatalogEntry): number => (a.disk < b.disk ? -1 : a.disk > b.disk ? 1 : 0);

/** Every target the view offers, in a stable order (sessions, points, exports). */
export function renderTargets(view: CatalogView): IscsiTarget[] {
  const out = new Map<string, IscsiTarget>();
  const add = (name: string, luns: CatalogEntry[]): void => {
    if (luns.length === 0 || out.has(name)) return;
    const sorted = [...luns].sort(byDisk);
    out.set(name, { name, luns: sorted, writable: sorted.some((e) => e.writable) });
  };
  for (const s of view.sessions()) add(sessionIqn(s.info.name), [...s.disks]);
  for (const vm of view.vms()) {
    for (const p of vm.points) add(pointIqn(vm.vm, p.info.id), [...p.disks]);
    const latest = vm.points.at(-1);
    if (latest) add(pointIqn(vm.vm, 'latest'), [...latest.disks]);
  }
  for (const e of view.entries()) if (e.kind === 'adhoc') add(exportIqn(e.name), [e]);
  return [...out.values()];
}
