/** The sessions report flags forgotten sessions: too old, too big, nearly full quota, paused migration. */
import { describe, expect, it } from 'vitest';
import { describeSession } from '../../../src/recovery/session-report.js';
import type { RecoverySession } from '../../../src/recovery/session.js';

const GiB = 1024 ** 3;

function fakeSession(opts: { ageHours: number; overlayBytes: number; quota: number | null; migration?: { state: string; error: string | null } }): RecoverySession {
  const createdAt = new Date(Date.now() - opts.ageHours * 3600_000 - 60_000).toISOString();
  const disk = {
    name: 'disk0',
    size: 10 * GiB,
    state: opts.migration?.state ?? 'running',
    record: { migration: opts.migration ? { verified: null, error: opts.migration.error } : null },
    overlay: { stats: () => ({ allocatedBytes: opts.overlayBytes, diskBytes: opts.overlayBytes }) },
    counters: () => ({ reads: 1, writes: 2, readBytes: 0, writeBytes: 0, trims: 0, zeroes: 0, flushes: 0, errors: 0, writeRate: 5 }),
    migrationProgress: () => (opts.migration ? { disk: 'disk0', target: '/t', state: opts.migration.state, totalBytes: 1, doneBytes: 0, percent: 0, dirtyBytes: 0, copiedBytes: 0, rate: 0, etaSeconds: null, error: opts.migration.error } : null),
  };
  return {
    name: 's',
    record: { vm: 'vm', pointId: 'p', publish: { nbd: true, nfs: false, fuse: true }, createdAt, quota: opts.quota, commits: [] },
    limiter: { limits: {} },
    disks: [disk],
  } as unknown as RecoverySession;
}

const ctx = { now: Date.now(), warnAgeHours: 168, warnBytes: 50 * GiB, endpoints: () => ({ nbd: ['127.0.0.1:10809'], nbdSocket: [] }) };

describe('sessions report', () => {
  it('is quiet for a young, small session and gives its NBD URI', () => {
    const r = describeSession(fakeSession({ ageHours: 1, overlayBytes: GiB, quota: null }), ctx);
    expect(r.warnings).toEqual([]);
    expect(r.state).toBe('running');
    expect(r.disks[0]!.nbdUri).toBe('nbd://127.0.0.1:10809/session/s/disk0');
    expect(r.writeRate).toBe(5);
  });

  it('flags old and big sessions, nearly full quotas and paused migrations', () => {
    const r = describeSession(fakeSession({ ageHours: 200, overlayBytes: 60 * GiB, quota: 64 * GiB, migration: { state: 'paused', error: 'no space left on the target' } }), ctx);
    expect(r.state).toBe('paused');
    expect(r.warnings.join('\n')).toMatch(/running from backup for 200 h/);
    expect(r.warnings.join('\n')).toMatch(/overlays hold/);
    expect(r.warnings.join('\n')).toMatch(/94% of its quota/);
    expect(r.warnings.join('\n')).toMatch(/migration paused: no space left on the target/);
  });
});
