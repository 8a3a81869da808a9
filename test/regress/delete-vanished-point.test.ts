/**
 * Regression: deleting a restore point whose directory had already gone from the repository (removed
 * by hand, or by another prune) failed with a raw ENOENT from the rename and left the point in the
 * catalog, where it kept being listed and published. Found while building verify/prune/gc and
 * fixed in f800184 ("verify, prune and gc ..."): the catalog entry is dropped and the caller gets
 * ERR_POINT_NOT_FOUND.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { backup } from '../../src/repo/ingest.js';
import { Repository } from '../../src/repo/repository.js';
import { patternBuffer, tempDir } from '../helpers/images.js';

const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

it('drops the catalog entry of a point whose directory is gone and says ERR_POINT_NOT_FOUND', async () => {
  const d = tempDir('rebound-regress-vanished-');
  dirs.push(d);
  const repo = await Repository.open(path.join(d, 'data'), { chunkSize: 64 * 1024 });
  repos.push(repo);
  const src = path.join(d, 'src.img');
  fs.writeFileSync(src, patternBuffer(0, 256 * 1024));
  const p1 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
  fs.writeFileSync(src, patternBuffer(0, 256 * 1024, 2));
  const p2 = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }], basePoint: p1.id });
  expect(p2.id).not.toBe(p1.id);

  fs.rmSync(repo.pointDir('vm1', p1.id), { recursive: true });
  await expect(repo.deletePoint('vm1', p1.id)).rejects.toMatchObject({ code: 'ERR_POINT_NOT_FOUND' });
  expect((await repo.points('vm1')).map((p) => p.id)).toEqual([p2.id]);
  await expect(repo.deletePoint('vm1', p1.id)).rejects.toMatchObject({ code: 'ERR_POINT_NOT_FOUND' });
  // The other point is untouched and still deletable.
  await repo.deletePoint('vm1', p2.id);
  expect(await repo.points('vm1')).toEqual([]);
});
