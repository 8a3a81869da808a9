/**
 * The sessions report ("what is running from backup, for how long, and how big has it grown"):
 * the data behind `rebound sessions`, GET /v1/sessions and the dashboard. Flags sessions older
 * than the configured age or holding more overlay data than the configured size — the forgotten
 * snapshot problem of every instant-recovery product.
 */
import type { QosLimits } from '../blockdev/layers/qos.js';
import { nbdUris } from '../nbd/client.js';
import type { IoCounters } from '../blockdev/layers/stats.js';
import type { MigrationProgress } from './migration.js';
import type { Session } from './session.js';
import { sessionExportName } from './session.js';

export interface ReportContext {
  now: number;
  warnAgeHours: number;
  warnBytes: number;
  /** NBD endpoints of the daemon, for connection strings. */
  endpoints: () => { nbd: string[]; nbdSocket: string[] };
}

export interface SessionDiskReport {
  name: string;
  size: number;
  export: string | null;
  nbdUri: string | null;
  overlayBytes: number;
  overlayDiskBytes: number;
  quota: number | null;
  io: IoCounters;
  migration: MigrationProgress | null;
  switched: boolean;
  verified: { units: number; repaired: number } | null;
}

export interface SessionReport {
  name: string;
  vm: string;
  point: string;
  createdAt: string;
  ageSeconds: number;
  state: 'running' | 'migrating' | 'in-step' | 'paused' | 'switched';
  publish: { nbd: boolean; nfs: boolean };
  qos: QosLimits;
  overlayBytes: number;
  writeRate: number;
  disks: SessionDiskReport[];
  warnings: string[];
  commits: Array<{ pointId: string; at: string }>;
}

export function describeSession(s: Session, ctx: ReportContext): SessionReport {
  const ep = ctx.endpoints();
  const disks: SessionDiskReport[] = s.disks.map((d) => {
    const st = d.overlay?.stats();
    const exp = s.publish.nbd ? sessionExportName(s.name, d.name) : null;
    return {
      name: d.name,
      size: d.size,
      export: exp,
      nbdUri: exp ? (nbdUris(exp, ep)[0] ?? null) : null,
      overlayBytes: st?.allocatedBytes ?? 0,
      overlayDiskBytes: st?.diskBytes ?? 0,
      quota: s.record.quota,
      io: d.counters(),
      migration: d.migrationProgress(),
      switched: d.record.overlayRetired || d.migration?.record.state === 'switched',
      verified: d.migration?.record.verified ?? null,
    };
  });
  const overlayBytes = disks.reduce((a, d) => a + d.overlayBytes, 0);
  const ageSeconds = Math.floor((ctx.now - Date.parse(s.record.createdAt)) / 1000);
  const warnings: string[] = [];
  if (ctx.warnAgeHours > 0 && ageSeconds > ctx.warnAgeHours * 3600) {
    warnings.push(`running from backup for ${Math.floor(ageSeconds / 3600)} h (over ${ctx.warnAgeHours} h): migrate it to production storage or discard it`);
  }
  if (ctx.warnBytes > 0 && overlayBytes > ctx.warnBytes) warnings.push(`overlays hold ${overlayBytes} bytes (over ${ctx.warnBytes})`);
  for (const d of disks) {
    if (d.quota && d.overlayBytes > 0.9 * d.quota) warnings.push(`${d.name}: overlay at ${Math.round((d.overlayBytes / d.quota) * 100)}% of its quota`);
    if (d.migration?.state === 'paused') warnings.push(`${d.name}: migration paused: ${d.migration.error ?? 'stopped'}`);
  }
  const migs = disks.map((d) => d.migration).filter((m): m is MigrationProgress => m !== null);
  const state: SessionReport['state'] = disks.every((d) => d.switched)
    ? 'switched'
    : migs.some((m) => m.state === 'paused')
      ? 'paused'
      : migs.length && migs.every((m) => m.state === 'synced' || m.state === 'switched')
        ? 'in-step'
        : migs.some((m) => m.state === 'copying' || m.state === 'switching')
          ? 'migrating'
          : 'running';
  return {
    name: s.name,
    vm: s.vm,
    point: s.pointId,
    createdAt: s.record.createdAt,
    ageSeconds,
    state,
    publish: s.publish,
    qos: s.limiter.limits,
    overlayBytes,
    writeRate: disks.reduce((a, d) => a + d.io.writeRate, 0),
    disks,
    warnings,
    commits: s.record.commits,
  };
}
