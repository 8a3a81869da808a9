/** gc(): mark and sweep that only ever deletes unreferenced, unclaimed, old chunks, while backups and exports run. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checked } from '../../../src/blockdev/checked.js';
import { digestHex, encodeChunkHeader } from '../../../src/repo/format.js';
import { gc, type GcProgress } from '../../../src/repo/gc.js';
import { backup } from '../../../src/repo/ingest.js';
import type { PointManifest } from '../../../src/repo/manifest.js';
import { Repository } from '../../../src/repo/repository.js';
import { verify } from '../../../src/repo/verify.js';
import { makeImage, tempDir } from '../../helpers/images.js';

const CS = 65536;
const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

async function newRepo(): Promise<{ d: string; repo: Repository }> {
  const d = tempDir();
  dirs.push(d);
  const repo = await Repository.open(path.join(d, 'data'), { chunkSize: CS });
  repos.push(repo);
  return { d, repo };
}

/** File timestamps come from a coarse clock: let chunks written so far become older than gc's start. */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 50));

async function stored(repo: Repository): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const c of repo.store.list()) out.add(c.hex);
  return out;
}

async function chunksOf(repo: Repository, m: PointManifest): Promise<Set<string>> {
  const out = new Set<string>();
  for (const d of m.disks) {
    const index = await repo.readIndex(m, d.name);
    for (let i = 0; i < index.count; i++) if (index.digest(i)) out.add(digestHex(index.digest(i)!));
  }
  return out;
}

async function readDisk(repo: Repository, m: PointManifest, disk = 'disk0'): Promise<Buffer> {
  const img = checked(await repo.openImage(m, disk));
  const out = Buffer.alloc(img.size);
  await img.read(out, 0);
  await img.close();
  return out;
}

function overwrite(file: string, offset: number, data: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, data, 0, data.length, offset);
  fs.closeSync(fd);
}

const minus = (a: Set<string>, ...b: Array<Set<string>>): Set<string> => new Set([...a].filter((x) => !b.some((s) => s.has(x))));

describe('gc', () => {
  it('removes exactly the chunks only a pruned point used; keeps new and claimed ones', async () => {
    const { d, repo } = await newRepo();
    const src = path.join(d, 'a.img');
    makeImage(src, { size: 16 * CS, data: [[0, 12 * CS]] });
    const p1 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    overwrite(src, 2 * CS + 5, Buffer.from('changed'));
    overwrite(src, 5 * CS + 5, Buffer.from('changed'));
    const p2 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    const other = path.join(d, 'b.img');
    makeImage(other, { size: 4 * CS, data: [[0, 4 * CS]], seed: 5 });
    const p3 = await backup(repo, { vm: 'vm2', disks: [{ name: 'disk0', source: other }] });
    const unique = minus(await chunksOf(repo, p1), await chunksOf(repo, p2), await chunksOf(repo, p3));
    expect(unique.size).toBe(2);

    // Nothing is garbage yet.
    await settle();
    const before = await stored(repo);
    expect(await gc(repo)).toMatchObject({ removedChunks: 0, scannedChunks: before.size, markedChunks: before.size, points: 3 });

    await repo.deletePoint('vm1', p1.id);
    // Too new for a large grace period.
    expect(await gc(repo, { graceMs: 3_600_000 })).toMatchObject({ removedChunks: 0, keptNew: 2 });
    // Claimed by a running backup: kept.
    const claim = repo.store.claim();
    const [claimed] = [...unique];
    claim.set.add(claimed!);
    expect(await gc(repo)).toMatchObject({ removedChunks: 1, keptClaimed: 1 });
    claim.release();

    const progress: GcProgress[] = [];
    const res = await gc(repo, { onProgress: (p) => progress.push(p) });
    expect(res).toMatchObject({ points: 2, removedChunks: 1, keptNew: 0, keptClaimed: 0, scannedChunks: before.size - 1, markedChunks: before.size - 2 });
    expect(res.removedBytes).toBeGreaterThan(0);
    expect(await stored(repo)).toEqual(minus(before, unique));
    expect(progress[0]).toMatchObject({ phase: 'mark', done: 0, total: 2 });
    expect(progress.at(-1)).toMatchObject({ phase: 'sweep', removedChunks: 1 });
    expect(progress.at(-1)!.done).toBe(progress.at(-1)!.total);
    expect(fs.readdirSync(path.join(repo.dir, 'tmp'))).toEqual([]); // the start marker is gone

    expect(await verify(repo)).toMatchObject({ ok: true, points: 2 });
    expect(await gc(repo)).toMatchObject({ removedChunks: 0 });
  });

  it('keeps chunks written after it started', async () => {
    const { d, repo } = await newRepo();
    const src = path.join(d, 'a.img');
    makeImage(src, { size: 4 * CS, data: [[0, 4 * CS]] });
    await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    await settle();
    const raw = crypto.randomBytes(1000);
    const hex = crypto.createHash('sha256').update(raw).digest('hex');
    let written = false;
    const res = await gc(repo, {
      onProgress: () => {
        if (written) return;
        written = true; // an unreferenced chunk appears while gc marks (a backup that has not claimed it yet)
        fs.mkdirSync(path.dirname(repo.store.pathOf(hex)), { recursive: true });
        fs.writeFileSync(repo.store.pathOf(hex), Buffer.concat([encodeChunkHeader(0, raw.length), raw]));
      },
    });
    expect(res).toMatchObject({ removedChunks: 0, keptNew: 1 });
    expect(fs.existsSync(repo.store.pathOf(hex))).toBe(true);
    await settle();
    expect(await gc(repo)).toMatchObject({ removedChunks: 1 });
    expect(fs.existsSync(repo.store.pathOf(hex))).toBe(false);
  });

  it('keeps the chunks of an open image whose point was deleted, until the image closes', async () => {
    const { d, repo } = await newRepo();
    const a = path.join(d, 'a.img');
    const content = makeImage(a, { size: 8 * CS, data: [[0, 8 * CS]] });
    const p1 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: a }] });
    const b = path.join(d, 'b.img');
    makeImage(b, { size: 8 * CS, data: [[0, 8 * CS]], seed: 3 });
    await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: b }] });
    const p1Chunks = await chunksOf(repo, p1);

    const img = checked(await repo.openImage(p1, 'disk0')); // an export serves p1
    await repo.deletePoint('vm1', p1.id);
    await settle();
    expect(await gc(repo)).toMatchObject({ removedChunks: 0, points: 1, markedChunks: 16 });
    const out = Buffer.alloc(img.size);
    await img.read(out, 0); // nothing was read before: every chunk comes from the store
    expect(out.equals(content)).toBe(true);

    await img.close();
    expect(await gc(repo)).toMatchObject({ removedChunks: p1Chunks.size });
    expect([...p1Chunks].some((h) => fs.existsSync(repo.store.pathOf(h)))).toBe(false);
  });

  it('keeps chunks of points missing from the catalog (the files are the truth)', async () => {
    const { d, repo } = await newRepo();
    const a = path.join(d, 'a.img');
    const content = makeImage(a, { size: 4 * CS, data: [[0, 4 * CS]] });
    const p1 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: a }] });
    await repo.catalog.delete('vm1', p1.id);
    await settle();
    expect(await gc(repo)).toMatchObject({ removedChunks: 0, points: 1, markedChunks: 4 });
    expect(await repo.reindex()).toBe(1);
    expect((await readDisk(repo, await repo.point('vm1'))).equals(content)).toBe(true);
  });

  it('keeps chunks of a backup that commits and releases its claims after the mark', async () => {
    const { d, repo } = await newRepo();
    const a = path.join(d, 'a.img');
    const content = makeImage(a, { size: 6 * CS, data: [[0, 6 * CS]] });
    const p = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: a }] });
    const chunks = await chunksOf(repo, p);
    // Take the point out of the repository: its chunks look like garbage from an old prune ...
    const held = path.join(d, 'held');
    fs.renameSync(repo.pointDir('vm1', p.id), held);
    await repo.catalog.delete('vm1', p.id);
    // ... which a running backup dedups against: it claims them, so gc may not delete them.
    const claim = repo.store.claim();
    for (const h of chunks) claim.set.add(h);
    await settle();

    let committed = false;
    const res = await gc(repo, {
      onProgress: (x) => {
        if (x.phase !== 'sweep' || committed) return;
        // After gc's mark, the backup commits (renames its point into vms/) and releases its claims.
        committed = true;
        fs.renameSync(held, repo.pointDir('vm1', p.id));
        claim.release();
      },
    });
    expect(committed).toBe(true);
    expect(res).toMatchObject({ removedChunks: 0, keptClaimed: 0 });
    expect(await repo.reindex()).toBe(1);
    expect(await verify(repo)).toMatchObject({ ok: true, chunks: chunks.size });
    expect((await readDisk(repo, p)).equals(content)).toBe(true);
  });

  it('runs alongside a backup that dedups against garbage: the new point is complete', async () => {
    const { d, repo } = await newRepo();
    const size = 384 * CS;
    const src = path.join(d, 'big.img');
    const content = makeImage(src, { size, data: [[0, size]] });
    // Garbage from an old point that held the first 32 and the last 64 chunks of the image: the
    // backup dedups the head against it at once (claims), and reaches the tail only at the end.
    const oldSrc = path.join(d, 'old.img');
    fs.writeFileSync(oldSrc, Buffer.concat([content.subarray(0, 32 * CS), content.subarray(size - 64 * CS)]));
    const old = await backup(repo, { vm: 'old', disks: [{ name: 'disk0', source: oldSrc }] });
    const garbage = await chunksOf(repo, old);
    expect(garbage.size).toBe(96);
    await repo.deletePoint('old', old.id);
    await settle();

    let backupDone = false;
    const runs: Array<Awaited<ReturnType<typeof gc>>> = [];
    const [m] = await Promise.all([
      backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] }).finally(() => {
        backupDone = true;
      }),
      (async () => {
        do runs.push(await gc(repo));
        while (!backupDone);
      })(),
    ]);
    expect((await readDisk(repo, m)).equals(content)).toBe(true);
    const chunks = await chunksOf(repo, m);
    expect(chunks.size).toBe(384);
    expect(await verify(repo)).toMatchObject({ ok: true, points: 1, chunks: 384 });
    // The first run kept each garbage chunk the backup had claimed by then and deleted the others
    // (the backup wrote those again). How many fall on each side, and whether a later run catches
    // chunks being written (keptNew), depends on the two's relative speed, so only the sum is
    // asserted: asserting a split failed on fresh clones (keptNew > 0: 1 run in 7; removed > 0: on
    // 2026-12-07 the backup had claimed all 96 before the first sweep): the point above is complete
    // either way.
    expect(runs[0]!.keptClaimed + runs[0]!.removedChunks).toBe(96);
    await settle();
    expect(await gc(repo)).toMatchObject({ removedChunks: 0, markedChunks: 384 });
    expect(await verify(repo)).toMatchObject({ ok: true });
  });

  it('stops when aborted, having deleted only garbage', async () => {
    const { d, repo } = await newRepo();
    const src = path.join(d, 'a.img');
    makeImage(src, { size: 320 * CS, data: [[0, 320 * CS]] });
    const p1 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    makeImage(src, { size: 64 * CS, data: [[0, 64 * CS]], seed: 2 });
    await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    await repo.deletePoint('vm1', p1.id);
    await settle();
    const before = await stored(repo);
    expect(before.size).toBe(384);

    const ac = new AbortController();
    await expect(
      gc(repo, {
        signal: ac.signal,
        onProgress: (p) => {
          if (p.removedChunks > 0) ac.abort(new Error('stop')); // after the first batch
        },
      }),
    ).rejects.toThrow('stop');
    const after = await stored(repo);
    expect(after.size).toBeLessThan(384);
    expect(after.size).toBeGreaterThan(64);
    expect(await verify(repo)).toMatchObject({ ok: true, points: 1 });
    expect(fs.readdirSync(path.join(repo.dir, 'tmp'))).toEqual([]);
    await expect(gc(repo, { graceMs: -1 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    expect(await gc(repo)).toMatchObject({ removedChunks: after.size - 64 });
    expect((await stored(repo)).size).toBe(64);
  });

  it('stops without deleting anything when an index cannot be read', async () => {
    const { d, repo } = await newRepo();
    const src = path.join(d, 'a.img');
    makeImage(src, { size: 4 * CS, data: [[0, 4 * CS]] });
    const p1 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    makeImage(src, { size: 4 * CS, data: [[0, 4 * CS]], seed: 2 });
    const p2 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    await repo.deletePoint('vm1', p1.id);
    fs.truncateSync(path.join(repo.pointDir('vm1', p2.id), 'disk0.fidx'), 70);
    await settle();
    const before = await stored(repo);
    await expect(gc(repo)).rejects.toMatchObject({ code: 'ERR_REPO_CORRUPT', message: expect.stringContaining('gc stopped') });
    expect(await stored(repo)).toEqual(before);
  });
});
