/** verify(): re-hashes every referenced chunk once and names every restore point a bad chunk breaks. */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { digestHex } from '../../../src/repo/format.js';
import { backup } from '../../../src/repo/ingest.js';
import type { PointManifest } from '../../../src/repo/manifest.js';
import { Repository } from '../../../src/repo/repository.js';
import { verify, type VerifyProgress } from '../../../src/repo/verify.js';
import { patternBuffer, tempDir } from '../../helpers/images.js';

const CS = 65536;
const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

/** Writes a raw image of whole chunks: a Buffer per chunk, null for a zero chunk. */
function writeImage(file: string, chunks: Array<Buffer | null>): void {
  const out = Buffer.alloc(chunks.length * CS);
  chunks.forEach((c, i) => c?.copy(out, i * CS));
  fs.writeFileSync(file, out);
}

const block = (n: number, seed = 1): Buffer => patternBuffer(n * CS, CS, seed);

/**
 * vm1@p1 and vm1@p2 share everything but chunk 5; chunk 0 and chunk 3 hold the same data (one
 * chunk file); chunk 2 is zero. vm2@p3 has its own data.
 */
async function setup(): Promise<{ repo: Repository; p1: PointManifest; p2: PointManifest; p3: PointManifest }> {
  const d = tempDir();
  dirs.push(d);
  const repo = await Repository.open(path.join(d, 'data'), { chunkSize: CS });
  repos.push(repo);
  const a = path.join(d, 'a.img');
  const x = block(100);
  writeImage(a, [x, block(1), null, x, block(4), block(5), block(6), block(7)]);
  const p1 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: a }] });
  writeImage(a, [x, block(1), null, x, block(4), block(55), block(6), block(7)]);
  const p2 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: a }] });
  const b = path.join(d, 'b.img');
  writeImage(b, [block(0, 9), block(1, 9), block(2, 9)]);
  const p3 = await backup(repo, { vm: 'vm2', disks: [{ name: 'disk0', source: b }] });
  return { repo, p1, p2, p3 };
}

async function chunkHex(repo: Repository, m: PointManifest, i: number): Promise<string> {
  return digestHex((await repo.readIndex(m, 'disk0')).digest(i)!);
}

describe('verify', () => {
  it('checks each distinct chunk of every point once, through the store, a few at a time', async () => {
    const { repo, p1, p2, p3 } = await setup();
    const distinct = new Set<string>();
    for (const m of [p1, p2, p3]) {
      const index = await repo.readIndex(m, 'disk0');
      for (let i = 0; i < index.count; i++) if (index.digest(i)) distinct.add(digestHex(index.digest(i)!));
    }
    expect(distinct.size).toBe(6 + 1 + 3);

    let inFlight = 0;
    let maxInFlight = 0;
    const hexes: string[] = [];
    const original = repo.store.readChunk.bind(repo.store);
    repo.store.readChunk = async (digest) => {
      hexes.push(digestHex(digest));
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      try {
        return await original(digest);
      } finally {
        inFlight--;
      }
    };
    const cacheBefore = repo.cache.stats();
    const progress: VerifyProgress[] = [];
    const report = await verify(repo, { onProgress: (p) => progress.push(p) });

    expect(report).toMatchObject({ points: 3, chunks: distinct.size, bytes: distinct.size * CS, ok: true, problems: [], indexProblems: [] });
    expect(hexes.sort()).toEqual([...distinct].sort());
    expect(maxInFlight).toBe(4);
    expect(repo.cache.stats()).toMatchObject({ hits: cacheBefore.hits, misses: cacheBefore.misses });
    expect(progress.at(-1)).toMatchObject({ phase: 'chunks', done: distinct.size, total: distinct.size, bytes: distinct.size * CS });
    expect(progress.filter((p) => p.phase === 'indexes').at(-1)).toMatchObject({ done: 3, total: 3 });
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });

  it('names a corrupt shared chunk with every point, disk and chunk number it breaks, even when cached', async () => {
    const { repo, p1, p2 } = await setup();
    const hex = await chunkHex(repo, p1, 0);
    // Warm the shared cache with the good chunk: verify must not be fooled by it.
    const img = await repo.openImage(p1, 'disk0');
    await img.read(Buffer.alloc(CS), 0);
    await img.close();
    const file = repo.store.pathOf(hex);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 10] ^= 0x01;
    fs.writeFileSync(file, bytes);

    const all = await verify(repo);
    expect(all.ok).toBe(false);
    expect(all.problems).toEqual([
      {
        chunk: hex,
        error: 'corrupt',
        message: expect.stringContaining(hex),
        affected: [
          { vm: 'vm1', point: p1.id, disk: 'disk0', chunkIndexes: [0, 3] },
          { vm: 'vm1', point: p2.id, disk: 'disk0', chunkIndexes: [0, 3] },
        ],
      },
    ]);
    expect(all.bytes).toBe((all.chunks - 1) * CS);

    // Verifying one point still lists every point the chunk breaks.
    const one = await verify(repo, { vm: 'vm1', point: p1.id });
    expect(one.points).toBe(1);
    expect(one.chunks).toBe(6);
    expect(one.problems).toEqual(all.problems);
    const latest = await verify(repo, { vm: 'vm1', point: 'latest' });
    expect(latest.points).toBe(1);
    expect(latest.problems.map((p) => p.chunk)).toEqual([hex]);
    // vm2 does not use the chunk.
    expect(await verify(repo, { vm: 'vm2' })).toMatchObject({ points: 1, chunks: 3, ok: true, problems: [] });
  });

  it('reports missing chunks, shared or not', async () => {
    const { repo, p1, p2 } = await setup();
    const shared = await chunkHex(repo, p1, 1);
    const onlyP1 = await chunkHex(repo, p1, 5);
    expect(await chunkHex(repo, p2, 5)).not.toBe(onlyP1);
    fs.rmSync(repo.store.pathOf(shared));
    fs.rmSync(repo.store.pathOf(onlyP1));

    const report = await verify(repo, { vm: 'vm1' });
    expect(report).toMatchObject({ points: 2, chunks: 7, ok: false });
    expect(report.problems).toEqual([
      {
        chunk: shared,
        error: 'missing',
        message: expect.stringContaining('missing'),
        affected: [
          { vm: 'vm1', point: p1.id, disk: 'disk0', chunkIndexes: [1] },
          { vm: 'vm1', point: p2.id, disk: 'disk0', chunkIndexes: [1] },
        ],
      },
      { chunk: onlyP1, error: 'missing', message: expect.any(String), affected: [{ vm: 'vm1', point: p1.id, disk: 'disk0', chunkIndexes: [5] }] },
    ]);
    expect(await verify(repo, { vm: 'vm2' })).toMatchObject({ ok: true });
  });

  it('reports an unreadable index without stopping', async () => {
    const { repo, p1, p3 } = await setup();
    const file = path.join(repo.pointDir('vm2', p3.id), 'disk0.fidx');
    fs.truncateSync(file, 100);
    const report = await verify(repo);
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([]);
    expect(report.indexProblems).toEqual([{ vm: 'vm2', point: p3.id, disk: 'disk0', message: expect.stringContaining('truncated') }]);
    expect(report.chunks).toBe(7); // vm1's chunks were still checked
    expect(await verify(repo, { vm: 'vm1', point: p1.id })).toMatchObject({ ok: true });
  });

  it('rejects bad selections and stops when aborted', async () => {
    const { repo } = await setup();
    await expect(verify(repo, { vm: 'nope' })).rejects.toMatchObject({ code: 'ERR_VM_NOT_FOUND' });
    await expect(verify(repo, { vm: 'vm1', point: '20000101T000000Z' })).rejects.toMatchObject({ code: 'ERR_POINT_NOT_FOUND' });
    await expect(verify(repo, { point: 'latest' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });

    const ac = new AbortController();
    let checkedAfterAbort = 0;
    const p = verify(repo, {
      signal: ac.signal,
      concurrency: 1,
      onProgress: (x) => {
        if (ac.signal.aborted) checkedAfterAbort++;
        if (x.phase === 'chunks' && x.done === 2) ac.abort(new Error('stop'));
      },
    });
    await expect(p).rejects.toThrow('stop');
    expect(checkedAfterAbort).toBe(0);
  });
});
