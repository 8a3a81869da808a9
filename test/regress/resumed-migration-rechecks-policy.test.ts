/**
 * Regression (security): a migration's target was checked against the path policy once, when the
 * migration was asked for. After a restart the daemon resumed the copy into the saved target
 * without asking again, so narrowing targetDirs did not stop a migration into a directory that was
 * no longer allowed. The session manager now gives every migration the daemon's policy as a gate
 * (util/path-policy.ts): a resumed copy opens its target through it and pauses with the refusal.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { Catalog } from '../../src/exports/catalog.js';
import { backup } from '../../src/repo/ingest.js';
import { Repository } from '../../src/repo/repository.js';
import { SessionManager } from '../../src/recovery/session-manager.js';
import { silentLogger } from '../../src/util/log.js';
import { PathPolicy } from '../../src/util/path-policy.js';
import { patternBuffer, tempDir } from '../helpers/images.js';

const MiB = 1024 * 1024;
let dir: string;
let repo: Repository;

const openManager = (targetDirs: string[]): Promise<SessionManager> =>
  SessionManager.open({
    dataDir: path.join(dir, 'data'),
    repo,
    catalog: new Catalog(),
    log: silentLogger,
    globalQos: {},
    report: { warnAgeHours: 0, warnBytes: 0, endpoints: () => ({ nbd: [], nbdSocket: [] }) },
    paths: new PathPolicy({ sourceDirs: [], targetDirs }),
  });

beforeEach(async () => {
  dir = tempDir('rebound-resume-policy-');
  fs.mkdirSync(path.join(dir, 'prod'));
  const img = path.join(dir, 'disk.img');
  fs.writeFileSync(img, patternBuffer(0, 8 * MiB));
  repo = await Repository.open(path.join(dir, 'data'), { chunkSize: 256 * 1024 });
  await backup(repo, { vm: 'vm', disks: [{ name: 'disk0', source: img }] });
});

afterEach(async () => {
  await repo.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

it('a migration resumed after a restart is checked against the policy in force then', async () => {
  const target = path.join(dir, 'prod', 'vm.raw');
  let mgr = await openManager([path.join(dir, 'prod')]);
  await mgr.recover({ vm: 'vm', name: 's' });
  // 64 KiB/s: the copy of 8 MiB is still going when the daemon stops.
  const [disk] = await mgr.migrate('s', { to: target, rate: 64 * 1024 });
  expect(disk!.state).toBe('copying');
  await mgr.close();

  // Restarted with targetDirs narrowed to another directory: the copy does not resume into prod/.
  mgr = await openManager([path.join(dir, 'elsewhere')]);
  const d = mgr.require('s').disks[0]!;
  await d.whenState(['paused'], ['in-step', 'switched', 'retired', 'discarded']);
  expect(d.migrationProgress()?.error).toMatch(/migration target .*not below a directory in targetDirs/);
  // The VM keeps running on its overlay, and it can still be sent home where the policy allows.
  expect(d.state).toBe('paused');
  await mgr.close();
});
