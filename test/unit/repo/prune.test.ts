/** Retention: planPrune's rules (restic-style keep-last/daily/weekly/monthly, UTC) and prune() with pins. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pointIdFor } from '../../../src/repo/format.js';
import { backup } from '../../../src/repo/ingest.js';
import { POINT_FORMAT, POINT_VERSION, type PointManifest } from '../../../src/repo/manifest.js';
import { isoWeek, planPrune, prune, type RetentionPolicy } from '../../../src/repo/prune.js';
import { Repository } from '../../../src/repo/repository.js';
import { makeImage, tempDir } from '../../helpers/images.js';

// Run in a time zone far from UTC so that local-time date arithmetic would show.
const savedTz = process.env.TZ;
beforeAll(() => {
  process.env.TZ = 'Pacific/Kiritimati'; // UTC+14
});
afterAll(() => {
  if (savedTz === undefined) delete process.env.TZ;
  else process.env.TZ = savedTz;
});

function mk(createdAt: string, vm = 'vm1'): PointManifest {
  return {
    format: POINT_FORMAT,
    version: POINT_VERSION,
    vm,
    id: pointIdFor(new Date(createdAt)),
    createdAt,
    label: 'crash',
    tags: [],
    disks: [],
    configs: [],
    durationMs: 1,
  };
}

const idOf = (iso: string): string => pointIdFor(new Date(iso));

interface Case {
  name: string;
  points: string[];
  policy: RetentionPolicy;
  keep: string[];
}

const CASES: Case[] = [
  {
    name: 'keep-last keeps the N newest, whatever their days',
    points: ['2025-01-01T10:00:00Z', '2025-01-01T11:00:00Z', '2025-01-01T12:00:00Z', '2025-01-03T00:00:00Z', '2025-02-01T00:00:00Z'],
    policy: { keepLast: 3 },
    keep: ['2025-01-01T12:00:00Z', '2025-01-03T00:00:00Z', '2025-02-01T00:00:00Z'],
  },
  {
    name: 'keep-last larger than the number of points keeps them all',
    points: ['2025-01-01T10:00:00Z', '2025-01-02T10:00:00Z'],
    policy: { keepLast: 10 },
    keep: ['2025-01-01T10:00:00Z', '2025-01-02T10:00:00Z'],
  },
  {
    name: 'keep-daily keeps the newest of each of the N newest days that have points (gaps do not count)',
    points: [
      '2025-01-01T01:00:00Z',
      '2025-01-01T23:00:00Z',
      '2025-01-02T12:00:00Z',
      '2025-01-05T03:00:00Z',
      '2025-01-05T09:00:00Z',
      '2025-01-05T21:00:00Z',
      '2025-01-06T00:30:00Z',
    ],
    policy: { keepDaily: 3 },
    keep: ['2025-01-02T12:00:00Z', '2025-01-05T21:00:00Z', '2025-01-06T00:30:00Z'],
  },
  {
    name: 'keep-daily counts UTC days, not the writer\'s local days',
    // 23:30 at +02:00 on the 2nd is 21:30 UTC on the 2nd; 00:30 at +02:00 on the 3rd is 22:30 UTC on the 2nd.
    points: ['2025-01-02T12:00:00Z', '2025-01-02T23:30:00+02:00', '2025-01-03T00:30:00+02:00', '2025-01-03T01:00:00Z'],
    policy: { keepDaily: 2 },
    keep: ['2025-01-03T00:30:00+02:00', '2025-01-03T01:00:00Z'],
  },
  {
    name: 'keep-weekly uses ISO weeks (Monday to Sunday, across the new year)',
    points: ['2024-12-23T10:00:00Z', '2024-12-29T10:00:00Z', '2024-12-30T10:00:00Z', '2025-01-05T10:00:00Z'],
    policy: { keepWeekly: 2 },
    keep: ['2024-12-29T10:00:00Z', '2025-01-05T10:00:00Z'],
  },
  {
    name: 'keep-monthly keeps the newest of each of the N newest months with points, in UTC',
    points: [
      '2024-10-15T00:00:00Z',
      '2024-11-02T00:00:00Z',
      '2024-11-30T23:59:00Z',
      '2025-01-01T00:00:01Z',
      '2025-01-31T12:00:00Z',
      '2025-03-01T00:30:00+02:00', // 2025-02-28 22:30 UTC: February
    ],
    policy: { keepMonthly: 3 },
    keep: ['2024-11-30T23:59:00Z', '2025-01-31T12:00:00Z', '2025-03-01T00:30:00+02:00'],
  },
  {
    name: 'rules are independent; a point kept by any rule is kept',
    points: [
      '2024-11-10T00:00:00Z',
      '2024-12-01T00:00:00Z',
      '2024-12-20T00:00:00Z',
      '2025-01-02T00:00:00Z',
      '2025-01-06T08:00:00Z',
      '2025-01-07T08:00:00Z',
      '2025-01-07T20:00:00Z',
    ],
    policy: { keepLast: 1, keepDaily: 2, keepWeekly: 2, keepMonthly: 3 },
    // last: 01-07T20; daily: 01-07T20, 01-06; weekly (W02: 01-07T20, W01: 01-02); monthly: Jan 01-07T20, Dec 12-20, Nov 11-10
    keep: ['2024-11-10T00:00:00Z', '2024-12-20T00:00:00Z', '2025-01-02T00:00:00Z', '2025-01-06T08:00:00Z', '2025-01-07T20:00:00Z'],
  },
  {
    name: 'zero counts are no rule: everything is kept',
    points: ['2025-01-01T00:00:00Z', '2025-01-02T00:00:00Z'],
    policy: { keepLast: 0, keepDaily: 0 },
    keep: ['2025-01-01T00:00:00Z', '2025-01-02T00:00:00Z'],
  },
  {
    name: 'no policy keeps everything',
    points: ['2025-01-01T00:00:00Z', '2025-01-02T00:00:00Z', '2025-01-03T00:00:00Z'],
    policy: {},
    keep: ['2025-01-01T00:00:00Z', '2025-01-02T00:00:00Z', '2025-01-03T00:00:00Z'],
  },
];

describe('planPrune', () => {
  for (const c of CASES) {
    it(c.name, () => {
      const points = c.points.map((p) => mk(p));
      const plan = planPrune(points, c.policy, new Date('2030-01-01T00:00:00Z'));
      expect(plan.keep.map((k) => k.id)).toEqual(c.keep.map(idOf));
      expect(plan.remove.map((r) => r.id)).toEqual(c.points.filter((p) => !c.keep.includes(p)).map(idOf));
      expect(plan.at).toBe('2030-01-01T00:00:00.000Z');
    });
  }

  it('gives every rule that keeps a point as a reason', () => {
    const points = ['2025-01-05T10:00:00Z', '2025-01-06T10:00:00Z', '2025-01-06T11:00:00Z'].map((p) => mk(p));
    const plan = planPrune(points, { keepLast: 2, keepDaily: 2, keepMonthly: 1 });
    expect(plan.keep).toEqual([
      { vm: 'vm1', id: idOf('2025-01-05T10:00:00Z'), createdAt: '2025-01-05T10:00:00Z', reasons: ['daily'] },
      { vm: 'vm1', id: idOf('2025-01-06T10:00:00Z'), createdAt: '2025-01-06T10:00:00Z', reasons: ['last'] },
      { vm: 'vm1', id: idOf('2025-01-06T11:00:00Z'), createdAt: '2025-01-06T11:00:00Z', reasons: ['last', 'daily', 'monthly'] },
    ]);
    expect(plan.remove).toEqual([]);
    expect(planPrune(points, {}).keep.every((k) => k.reasons.join() === 'no-policy')).toBe(true);
  });

  it('judges each VM on its own', () => {
    const points = [mk('2025-01-01T00:00:00Z', 'a'), mk('2025-01-02T00:00:00Z', 'a'), mk('2025-01-01T00:00:00Z', 'b'), mk('2025-01-03T00:00:00Z', 'b')];
    const plan = planPrune(points, { keepLast: 1 });
    expect(plan.keep.map((k) => `${k.vm}@${k.id}`)).toEqual([`a@${idOf('2025-01-02T00:00:00Z')}`, `b@${idOf('2025-01-03T00:00:00Z')}`]);
    expect(plan.remove.map((k) => `${k.vm}@${k.id}`)).toEqual([`a@${idOf('2025-01-01T00:00:00Z')}`, `b@${idOf('2025-01-01T00:00:00Z')}`]);
  });

  it('falls back to the id for the time and keeps a point whose time is unknown', () => {
    const byId = { ...mk('2025-01-01T00:00:00Z'), id: '20250105T000000Z', createdAt: 'not a date' };
    const unknown = { ...mk('2025-01-01T00:00:00Z'), id: 'weird', createdAt: 'not a date' };
    const older = mk('2025-01-02T00:00:00Z');
    const plan = planPrune([older, byId, unknown], { keepLast: 1 });
    expect(plan.keep).toEqual([
      { vm: 'vm1', id: '20250105T000000Z', createdAt: 'not a date', reasons: ['last'] },
      { vm: 'vm1', id: 'weird', createdAt: 'not a date', reasons: ['unknown-time'] },
    ]);
    expect(plan.remove.map((r) => r.id)).toEqual([older.id]);
  });

  it('rejects malformed policies', () => {
    const points = [mk('2025-01-01T00:00:00Z')];
    for (const bad of [{ keepLast: -1 }, { keepDaily: 1.5 }, { keepWeekly: '3' }, { keepYearly: 2 }, { 'keep-last': 1 }, { keepMonthly: Number.NaN }]) {
      expect(() => planPrune(points, bad as RetentionPolicy), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
    }
  });

  it('computes ISO weeks', () => {
    expect(isoWeek(new Date('2024-12-29T23:59:59Z'))).toBe('2024-W52');
    expect(isoWeek(new Date('2024-12-30T00:00:00Z'))).toBe('2025-W01');
    expect(isoWeek(new Date('2021-01-03T12:00:00Z'))).toBe('2020-W53');
    expect(isoWeek(new Date('2026-06-15T12:00:00Z'))).toBe('2026-W25');
  });
});

describe('prune', () => {
  const dirs: string[] = [];
  const repos: Repository[] = [];
  afterEach(async () => {
    for (const r of repos.splice(0)) await r.close();
    dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
  });

  async function threePoints(): Promise<{ repo: Repository; ids: string[] }> {
    const d = tempDir();
    dirs.push(d);
    const repo = await Repository.open(path.join(d, 'data'), { chunkSize: 65536 });
    repos.push(repo);
    const src = path.join(d, 'disk.img');
    makeImage(src, { size: 256 * 1024, data: [[0, 100_000]] });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] })).id);
    return { repo, ids };
  }

  it('deletes what the policy does not keep, never a pinned point; a dry run deletes nothing', async () => {
    const { repo, ids } = await threePoints();
    const [oldest, middle, newest] = ids as [string, string, string];
    const unpin = repo.pin('vm1', oldest);

    const dry = await prune(repo, 'vm1', { keepLast: 1 }, { dryRun: true });
    expect(dry).toMatchObject({ vm: 'vm1', dryRun: true, removed: [], remove: [{ vm: 'vm1', id: middle }] });
    expect(dry.keep.map((k) => [k.id, k.reasons])).toEqual([
      [oldest, ['pinned']],
      [newest, ['last']],
    ]);
    expect((await repo.points('vm1')).map((p) => p.id)).toEqual(ids);

    const progress: Array<[number, number]> = [];
    const real = await prune(repo, 'vm1', { keepLast: 1 }, { onProgress: (p) => progress.push([p.done, p.total]) });
    expect(real).toMatchObject({ dryRun: false, removed: [middle], remove: [{ id: middle }] });
    expect(real.keep.map((k) => [k.id, k.reasons])).toEqual(dry.keep.map((k) => [k.id, k.reasons]));
    expect(progress).toEqual([
      [0, 1],
      [1, 1],
    ]);
    expect((await repo.points('vm1')).map((p) => p.id)).toEqual([oldest, newest]);
    expect(fs.existsSync(repo.pointDir('vm1', middle))).toBe(false);
    expect(fs.existsSync(repo.pointDir('vm1', oldest))).toBe(true);

    unpin();
    const after = await prune(repo, 'vm1', { keepLast: 1 });
    expect(after.removed).toEqual([oldest]);
    expect((await repo.points('vm1')).map((p) => p.id)).toEqual([newest]);
    expect(await repo.reindex()).toBe(1); // the files agree with the catalog
  });

  it('checks pins again right before each deletion', async () => {
    const { repo, ids } = await threePoints();
    const [oldest, middle, newest] = ids as [string, string, string];
    let pinned = false;
    const result = await prune(repo, 'vm1', { keepLast: 1 }, {
      onProgress: () => {
        if (!pinned) repo.pin('vm1', oldest); // a recovery session starts while prune runs
        pinned = true;
      },
    });
    expect(result.removed).toEqual([middle]);
    expect(result.remove.map((r) => r.id)).toEqual([middle]);
    expect(result.keep.map((k) => [k.id, k.reasons])).toEqual([
      [oldest, ['pinned']],
      [newest, ['last']],
    ]);
    expect((await repo.points('vm1')).map((p) => p.id)).toEqual([oldest, newest]);
  });

  it('refuses to prune without a rule, and unknown VMs', async () => {
    const { repo, ids } = await threePoints();
    await expect(prune(repo, 'vm1', {})).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(prune(repo, 'vm1', { keepDaily: 0 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(prune(repo, 'nope', { keepLast: 1 })).rejects.toMatchObject({ code: 'ERR_VM_NOT_FOUND' });
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(prune(repo, 'vm1', { keepLast: 1 }, { signal: ac.signal })).rejects.toThrow('stop');
    expect((await repo.points('vm1')).map((p) => p.id)).toEqual(ids);
  });
});
