/**
 * The committed repository of format 1 (test/fixtures/repo-v1, made by
 * tools/fixtures/make-v1-fixtures.mjs) opens with the current code: the catalog is rebuilt from the
 * manifests, both restore points are listed (the second an incremental of the first), every disk of
 * both reads back the expected bytes, verify finds every chunk good, and the repository keeps
 * working (a backup into it dedups against the old chunks). The fixture itself is never written.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { backup } from '../../../src/repo/ingest.js';
import { Repository } from '../../../src/repo/repository.js';
import { verify } from '../../../src/repo/verify.js';
import { tempDir } from '../../helpers/images.js';

const FIXTURE = path.join(import.meta.dirname, '../../fixtures/repo-v1');

interface Expected {
  vm: string;
  chunkSize: number;
  codec: string;
  points: Array<{
    id: string;
    label: string;
    tags: string[];
    basePoint: string | null;
    disks: Record<string, { size: number; sha256: string }>;
    configs: Record<string, string>;
  }>;
  chunks: string[];
}
const expected = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'expected.json'), 'utf8')) as Expected;

const sha = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex');

/** Every file under `dir` with its sha256 (to show the fixture is left alone). */
function tree(dir: string, base = dir): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) Object.assign(out, tree(p, base));
    else out[path.relative(base, p)] = sha(fs.readFileSync(p));
  }
  return out;
}

const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

/** A data directory holding a copy of the fixture's repository (and no catalog). */
async function openCopy(): Promise<{ data: string; repo: Repository }> {
  const d = tempDir('rebound-repo-v1-');
  dirs.push(d);
  const data = path.join(d, 'data');
  fs.cpSync(path.join(FIXTURE, 'repo'), path.join(data, 'repo'), { recursive: true });
  expect(fs.existsSync(path.join(data, 'catalog'))).toBe(false);
  const repo = await Repository.open(data);
  repos.push(repo);
  return { data, repo };
}

async function readDisk(repo: Repository, vm: string, point: string, disk: string): Promise<Buffer> {
  const img = await repo.openImage(await repo.point(vm, point), disk);
  try {
    const out = Buffer.alloc(img.size);
    await img.read(out, 0);
    return out;
  } finally {
    await img.close();
  }
}

describe('repository format 1 fixture', () => {
  it('opens with the current code and lists both points, the second an incremental of the first', async () => {
    const before = tree(path.join(FIXTURE, 'repo'));
    const { repo } = await openCopy();
    expect(repo.config).toMatchObject({ format: 'rebound-repo', version: 1, chunkSize: expected.chunkSize, codec: expected.codec });
    expect(repo.chunkSize).toBe(8192);
    const points = await repo.points(expected.vm);
    expect(points.map((p) => p.id)).toEqual(expected.points.map((p) => p.id));
    expect(await repo.vms()).toEqual([{ vm: 'web01', points: 2, latest: '20261123T030000Z' }]);
    expect((await repo.point('web01')).id).toBe('20261123T030000Z');
    for (const [i, want] of expected.points.entries()) {
      const m = points[i]!;
      expect(m).toMatchObject({ format: 'rebound-point', version: 1, vm: 'web01', label: want.label, tags: want.tags });
      expect(m.configs).toEqual(Object.keys(want.configs));
      expect(m.disks.map((d) => [d.name, d.size, d.chunkSize])).toEqual(Object.entries(want.disks).map(([n, d]) => [n, d.size, 8192]));
      for (const d of m.disks) expect(d.incremental?.basePoint ?? null).toBe(want.basePoint);
    }
    const inc = points[1]!.disks;
    expect(inc[0]!.incremental).toEqual({ bitmap: 'rebound-fixture', basePoint: '20261122T030000Z', dirtyChunks: 5 });
    expect(inc[0]!.readBytes).toBe(5 * 8192);
    expect(inc[1]!.readBytes).toBe(0);
    // The catalog was rebuilt from the manifests; rebuilding again finds the same two points.
    expect(await repo.reindex()).toBe(2);
    expect(tree(path.join(FIXTURE, 'repo'))).toEqual(before);
  });

  it('reads every disk of both points as expected, and the stored config files', async () => {
    const { repo } = await openCopy();
    for (const p of expected.points) {
      for (const [disk, want] of Object.entries(p.disks)) {
        const got = await readDisk(repo, expected.vm, p.id, disk);
        expect(got.length, `${p.id}/${disk}`).toBe(want.size);
        expect(sha(got), `${p.id}/${disk}`).toBe(want.sha256);
      }
      for (const [name, digest] of Object.entries(p.configs)) {
        expect(sha(fs.readFileSync(path.join(repo.pointDir(expected.vm, p.id), 'config', name)))).toBe(digest);
      }
    }
    // What the incremental kept from its base (disk1 unchanged, disk0 outside the dirty chunks).
    const [a0, b0] = [await readDisk(repo, 'web01', '20261122T030000Z', 'disk0'), await readDisk(repo, 'web01', '20261123T030000Z', 'disk0')];
    for (const i of [0, 3, 4, 8]) expect(b0.subarray(i * 8192, (i + 1) * 8192).equals(a0.subarray(i * 8192, (i + 1) * 8192)), `chunk ${i}`).toBe(true);
    expect(b0.subarray(2 * 8192, 3 * 8192).equals(a0.subarray(2 * 8192, 3 * 8192))).toBe(false);
    expect((await readDisk(repo, 'web01', '20261123T030000Z', 'disk1')).equals(await readDisk(repo, 'web01', '20261122T030000Z', 'disk1'))).toBe(true);
  });

  it('verifies every chunk of both points', async () => {
    const { repo } = await openCopy();
    const report = await verify(repo);
    expect(report).toMatchObject({ ok: true, points: 2, problems: [], indexProblems: [] });
    expect(report.chunks).toBe(expected.chunks.length);
    const files = fs.readdirSync(path.join(repo.dir, 'chunks'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(files.map((e) => e.name).sort()).toEqual([...expected.chunks].sort());
  });

  it('keeps working: a backup of a point\'s disk into it stores no new chunk and reads back', async () => {
    const { data, repo } = await openCopy();
    const src = path.join(path.dirname(data), 'disk0.img');
    fs.writeFileSync(src, await readDisk(repo, 'web01', '20261123T030000Z', 'disk0'));
    const m = await backup(repo, { vm: 'web01', disks: [{ name: 'disk0', source: src }] });
    expect(m.disks[0]!.newChunks).toBe(0);
    expect(sha(await readDisk(repo, 'web01', m.id, 'disk0'))).toBe(expected.points[1]!.disks.disk0!.sha256);
    expect((await repo.points('web01')).length).toBe(3);
  });
});
