/**
 * Regression: restore synced its target with fs.fsyncSync, blocking the daemon's event loop (every
 * export it served) for the whole sync, ~190 ms per restore in the repository benchmark. Fixed in
 * c96a097 ("Review fixes: ... restore syncs its target asynchronously instead of blocking the
 * daemon"). The target must still be synced before the restore reports success.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';
import { backup } from '../../src/repo/ingest.js';
import { Repository } from '../../src/repo/repository.js';
import { restore } from '../../src/repo/restore.js';
import { patternBuffer, tempDir } from '../helpers/images.js';

const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const r of repos.splice(0)) await r.close();
  dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

it('syncs the restored file without a synchronous fsync on the event loop', async () => {
  const d = tempDir('rebound-regress-restore-');
  dirs.push(d);
  const repo = await Repository.open(path.join(d, 'data'), { chunkSize: 64 * 1024 });
  repos.push(repo);
  const src = path.join(d, 'src.img');
  const image = Buffer.concat([patternBuffer(0, 192 * 1024), Buffer.alloc(64 * 1024)]);
  fs.writeFileSync(src, image);
  const m = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });

  const syncCalls = vi.spyOn(fs, 'fsyncSync');
  const dataSyncCalls = vi.spyOn(fs, 'fdatasyncSync');
  const asyncSyncs = [vi.spyOn(fs, 'fsync'), vi.spyOn(fs, 'fdatasync')];
  const to = path.join(d, 'restored.img');
  const r = await restore(repo, { vm: 'vm1', point: m.id, disk: 'disk0', to });
  expect(syncCalls).not.toHaveBeenCalled();
  expect(dataSyncCalls).not.toHaveBeenCalled();
  expect(asyncSyncs[0]!.mock.calls.length + asyncSyncs[1]!.mock.calls.length).toBeGreaterThan(0);
  expect(r.doneBytes).toBe(image.length);
  expect(fs.readFileSync(to).equals(image)).toBe(true);
});
