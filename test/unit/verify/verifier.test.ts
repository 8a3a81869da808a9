/**
 * The Verifier's bookkeeping without booting anything: QEMU is a stand-in that exits at once (the
 * boot then fails with ERR_VERIFY_UNAVAILABLE before any guest runs), which is enough to see the
 * concurrency limit, after-backup and scheduled verifications, the clean-up of each run and of
 * what a killed daemon left. The real boots are in test/interop/verify-boot.test.ts.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JobRegistry, type JobInfo } from '../../../src/api/jobs.js';
import { backup } from '../../../src/repo/ingest.js';
import { Repository } from '../../../src/repo/repository.js';
import { silentLogger } from '../../../src/util/log.js';
import { cleanLeftovers, runsDir } from '../../../src/verify/leftovers.js';
import { Verifier, type VerifierOptions } from '../../../src/verify/verifier.js';
import { tempDir } from '../../helpers/images.js';

const opened: Array<{ repo: Repository; v?: Verifier; dir: string }> = [];
afterEach(async () => {
  for (const o of opened.splice(0)) {
    o.v?.close();
    await o.repo.close();
    fs.rmSync(o.dir, { recursive: true, force: true });
  }
});

async function rig(over: Partial<VerifierOptions> = {}) {
  const dir = tempDir('rebound-verifier-');
  const disk = path.join(dir, 'disk.img');
  fs.writeFileSync(disk, Buffer.alloc(1024 * 1024, 7));
  const fake = path.join(dir, 'qemu.sh');
  fs.writeFileSync(fake, '#!/bin/sh\necho "fake qemu: no guest here" >&2\nexit 3\n', { mode: 0o755 });
  const repo = await Repository.open(dir, { chunkSize: 256 * 1024 });
  const jobs = new JobRegistry(silentLogger);
  const o = { repo, dir, v: undefined as Verifier | undefined };
  opened.push(o);
  const add = (vm: string) => backup(repo, { vm, disks: [{ name: 'sda', source: disk }] });
  await add('early');
  o.v = await Verifier.open({ repo, dataDir: dir, log: silentLogger, jobs, concurrency: 2, defaults: { timeoutSeconds: 30 }, afterBackup: false, schedule: 'off', qemu: fake, accel: 'tcg', ...over });
  const settled = async (): Promise<JobInfo[]> => {
    for (let i = 0; i < 2000 && jobs.list().some((j) => j.state === 'running'); i++) await new Promise((r) => setTimeout(r, 10));
    return jobs.list();
  };
  return { repo, jobs, v: o.v, dir, add, settled };
}

describe('Verifier', () => {
  it('runs at most `concurrency` boots; each run is undone (no run directory, no pin)', async () => {
    const { repo, v, dir, settled } = await rig({ concurrency: 1 });
    const m = await repo.point('early', 'latest');
    for (let i = 0; i < 3; i++) v.start(m, { expectSerial: 'x' });
    const jobs = await settled();
    expect(jobs.map((j) => [j.kind, j.state, j.error?.code])).toEqual(Array(3).fill(['boot-verify', 'failed', 'ERR_VERIFY_UNAVAILABLE']));
    expect(jobs[0]!.error!.message).toMatch(/QEMU exited with code 3: fake qemu: no guest here/);
    expect(v.peak).toBe(1);
    expect(v.running).toBe(0);
    expect(fs.readdirSync(runsDir(dir))).toEqual([]);
    expect(repo.isPinned(m.vm, m.id)).toBe(false);
  });

  it('after a backup, verifies the new point once (not the points there at start)', async () => {
    const { jobs, v, add, settled } = await rig({ afterBackup: true });
    await v.pointsChanged();
    expect(jobs.list()).toEqual([]);
    const m = await add('web');
    await v.pointsChanged();
    await v.pointsChanged();
    const done = await settled();
    expect(done.map((j) => [j.params.vm, j.params.point, j.params.trigger])).toEqual([['web', m.id, 'after-backup']]);
  });

  it('verifies the newest point of every VM on its schedule', async () => {
    const { jobs, v, add, settled } = await rig({ schedule: '* * * * * *' }); // every second
    await add('web');
    for (let i = 0; i < 300 && jobs.list().filter((j) => j.params.trigger === 'schedule').length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    v.close();
    await settled();
    expect(new Set(jobs.list().map((j) => `${String(j.params.vm)} ${String(j.params.trigger)}`))).toEqual(new Set(['early schedule', 'web schedule']));
  });

  it('cleans what a killed daemon left: kills its QEMU (only if it names the run), removes the run', async () => {
    const dir = tempDir('rebound-leftovers-');
    try {
      const run = path.join(runsDir(dir), 'r1');
      fs.mkdirSync(path.join(run, 'overlays', 'sda'), { recursive: true });
      const ours = spawn('sh', ['-c', 'sleep 600', 'qemu', `${run}/qmp.sock`], { stdio: 'ignore' });
      const stranger = spawn('sleep', ['600'], { stdio: 'ignore' });
      fs.writeFileSync(path.join(run, 'run.json'), JSON.stringify({ id: 'r1', vm: 'web', point: 'p', startedAt: '', qemuPid: ours.pid }));
      const other = path.join(runsDir(dir), 'r2');
      fs.mkdirSync(other);
      fs.writeFileSync(path.join(other, 'qemu.pid'), `${stranger.pid}\n`);
      const gone = new Promise((r) => ours.once('exit', (_c, sig) => r(sig)));
      const cleaned = await cleanLeftovers(dir, silentLogger);
      expect(cleaned.sort((a, b) => a.id.localeCompare(b.id))).toEqual([
        { id: 'r1', vm: 'web', point: 'p', killed: ours.pid },
        { id: 'r2', vm: undefined, point: undefined, killed: null },
      ]);
      expect(await gone).toBe('SIGKILL');
      expect(stranger.exitCode).toBeNull();
      stranger.kill('SIGKILL');
      expect(fs.readdirSync(runsDir(dir))).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
