/**
 * The conformance suite over a recovery session's disk exactly as the daemon builds it
 * (SessionManager.recover: stats -> qos -> freeze -> switch -> dirty-tracker -> cow overlay ->
 * lazy repo image over a real repository), before a migration, while one copies, and after the
 * switch-over to a file target (the target *is* the VM's disk then).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { Catalog } from '../../src/exports/catalog.js';
import { backup } from '../../src/repo/ingest.js';
import { Repository } from '../../src/repo/repository.js';
import { SessionManager } from '../../src/recovery/session-manager.js';
import { silentLogger } from '../../src/util/log.js';
import { tempDir } from '../helpers/images.js';
import { blockDeviceSuite, type SuiteDevice } from './blockdev-suite.js';
import { imageFile } from './fixtures.js';

let dir: string;
let image: ReturnType<typeof imageFile>;
let repo: Repository;
let sessions: SessionManager;
let n = 0;

beforeAll(async () => {
  dir = tempDir('rebound-session-stack-');
  image = imageFile();
  repo = await Repository.open(path.join(dir, 'data'), { chunkSize: 256 * 1024 });
  await backup(repo, { vm: 'vm', disks: [{ name: 'disk0', source: image.file }] });
  sessions = await SessionManager.open({
    dataDir: path.join(dir, 'data'),
    repo,
    catalog: new Catalog(),
    log: silentLogger,
    globalQos: {},
    report: { warnAgeHours: 0, warnBytes: 0, endpoints: () => ({ nbd: [], nbdSocket: [] }) },
  });
});

afterAll(async () => {
  await sessions.close();
  await repo.close();
  image.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function recovered(): Promise<{ name: string; sd: SuiteDevice }> {
  const name = `s${++n}`;
  const s = await sessions.recover({ vm: 'vm', name });
  return { name, sd: { device: s.disks[0]!.top, expected: image.expected, cleanup: () => sessions.discard(name) } };
}

blockDeviceSuite('session disk (as the daemon builds it)', async () => (await recovered()).sd);

blockDeviceSuite('session disk while its migration copies to a file', async () => {
  const { name, sd } = await recovered();
  await sessions.migrate(name, { to: path.join(dir, `${name}.raw`), rate: 4 * 1024 * 1024 });
  return { ...sd, cleanup: () => sessions.discard(name) };
});

blockDeviceSuite('session disk after the switch-over to a file target', async () => {
  const { name, sd } = await recovered();
  const r = await sessions.migrateHome(name, { to: path.join(dir, `${name}.raw`), switch: true });
  if (r.switched?.[0]?.repaired !== 0) throw new Error(`switch repaired units: ${JSON.stringify(r.switched)}`);
  return { ...sd, cleanup: () => sessions.finish(name) };
});
