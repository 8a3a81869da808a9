/**
 * The sessions report ("what is running from backup, for how long, and how big has it grown"):
 * the data behind `rebound sessions`, GET /v1/sessions and the dashboard. Flags sessions older
 * than the configured age or holding more overlay data than the configured size — the forgotten
 * snapshot problem of every instant-recovery product.
 */
import type { QosLimits } from '../blockdev/layers/qos.js';
import { nbdUris, type NbdTlsMode } from '../nbd/client.js';
import type { IoCounters } from '../blockdev/layers/stats.js';
import { sessionEntryName } from '../exports/catalog.js';
import type { DiskState } from './disk-state.js';
import type { MigrationProgress } from './migration.js';
import type { PublishChoice } from './session-record.js';
import type { RecoverySession } from './session.js';

export interface ReportContext {
  now: number;
  warnAgeHours: number;
  warnBytes: number;
  /** NBD endpoints of the daemon, for connection strings. */
  endpoints: () => { nbd: string[]; nbdSocket: string[]; nbdTls?: NbdTlsMode };
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
  state: DiskState;
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
  /** Summary of the disks' states (disk-state.ts has the full story per disk). */
  state: 'running' | 'migrating' | 'in-step' | 'paused' | 'switching' | 'switched';
  publish: PublishChoice;
  qos: QosLimits;
  overlayBytes: number;
  writeRate: number;
  disks: SessionDiskReport[];
  warnings: string[];
  commits: Array<{ pointId: string; at: string }>;
}

export function describeSession(s: RecoverySession, ctx: ReportContext): SessionReport {
  const ep = ctx.endpoints();
  const r = s.record;
  const disks: SessionDiskReport[] = s.disks.map((d) => {
    const st = d.overlay?.stats();
    const exp = r.publish.nbd ? sessionEntryName(s.name, d.name) : null;
    return {
      name: d.name,
      size: d.size,
      export: exp,
      nbdUri: exp ? (nbdUris(exp, ep)[0] ?? null) : null,
      overlayBytes: st?.allocatedBytes ?? 0,
      overlayDiskBytes: st?.diskBytes ?? 0,
      quota: r.quota,
      io: d.counters(),
      state: d.state,
      migration: d.migrationProgress(),
      switched: d.state === 'switched' || d.state === 'retired',
      verified: d.record.migration?.verified ?? null,
    };
  });
  const overlayBytes = disks.reduce((a, d) => a + d.overlayBytes, 0);
  const ageSeconds = Math.floor((ctx.now - Date.parse(r.createdAt)) / 1000);
  const warnings: string[] = [];
  if (ctx.warnAgeHours > 0 && ageSeconds > ctx.warnAgeHours * 3600) {
    warnings.push(`running from backup for ${Math.floor(ageSeconds / 3600)} h (over ${ctx.warnAgeHours} h): migrate it to production storage or discard it`);
  }
  if (ctx.warnBytes > 0 && overlayBytes > ctx.warnBytes) warnings.push(`overlays hold ${overlayBytes} bytes (over ${ctx.warnBytes})`);
  for (const d of disks) {
    if (d.quota && d.overlayBytes > 0.9 * d.quota) warnings.push(`${d.name}: overlay at ${Math.round((d.overlayBytes / d.quota) * 100)}% of its quota`);
    if (d.state === 'paused') warnings.push(`${d.name}: migration paused: ${d.migration?.error ?? 'stopped'}`);
  }
  return {
    name: s.name,
    vm: r.vm,
    point: r.pointId,
    createdAt: r.createdAt,
    ageSeconds,
    state: summarize(disks.map((d) => d.state)),
    publish: r.publish,
    qos: s.limiter.limits,
    overlayBytes,
    writeRate: disks.reduce((a, d) => a + d.io.writeRate, 0),
    disks,
    warnings,
    commits: r.commits,
  };
}

/** One word for the session: the disk states that matter most to an operator win. */
function summarize(states: DiskState[]): SessionReport['state'] {
  const any = (...x: DiskState[]): boolean => states.some((s) => x.includes(s));
  if (states.every((s) => s === 'switched' || s === 'retired')) return 'switched';
  if (any('paused')) return 'paused';
  if (any('switching')) return 'switching';
  if (any('copying')) return 'migrating';
  return any('in-step') ? 'in-step' : 'running';
}
