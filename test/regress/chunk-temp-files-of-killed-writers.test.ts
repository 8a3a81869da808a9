/**
 * Regression: a backup killed with `kill -9` left half-written chunk temp files
 * (`chunks/xx/yy/HEX.tmp-PID-RAND`) that neither a restart nor gc removed. Chunks are now written
 * in the repository's tmp/ and renamed into place, and the repository empties tmp/ when it opens:
 * a killed writer's temp files are gone after the restart, without a walk of the chunk tree.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { backup } from '../../src/repo/ingest.js';
import { Repository } from '../../src/repo/repository.js';
import { verify } from '../../src/repo/verify.js';
import { REPO } from '../helpers/daemon-process.js';
import { makeImage, tempDir } from '../helpers/images.js';

/** The child runs the built code (tools/test.sh builds before the tests). */
const DIST = path.join(REPO, 'dist');

const CS = 65536;
const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

async function stored(repo: Repository): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const c of repo.store.list()) out.add(c.hex);
  return out;
}

/** Every file below the repository that is not a chunk, a point or the repository's own config. */
function leftovers(repoDir: string): string[] {
  return (fs.readdirSync(repoDir, { recursive: true }) as string[])
    .filter((f) => fs.statSync(path.join(repoDir, f)).isFile())
    .filter((f) => !/^chunks\/[0-9a-f]{2}\/[0-9a-f]{2}\/[0-9a-f]{64}$/.test(f) && !f.startsWith('vms/') && f !== 'repo.json');
}

describe('chunk temp files of killed writers', () => {
  it('do not survive a restart; chunks, points and verify stay intact', async () => {
    const d = tempDir();
    dirs.push(d);
    const data = path.join(d, 'data');
    const src = path.join(d, 'a.img');
    makeImage(src, { size: 32 * CS, data: [[0, 32 * CS]] });
    // A child process backs up and is killed with SIGKILL while it writes chunks (after the 4th).
    // It writes them from the event loop (no chunk workers), where the kill can be placed between
    // the temp file and its rename; chunk workers write their temp files into the same tmp/
    // (chunk-worker.ts, store), which the same cleanup empties.
    const script = `
      const { Repository } = await import(${JSON.stringify(path.join(DIST, 'repo/repository.js'))});
      const { backup } = await import(${JSON.stringify(path.join(DIST, 'repo/ingest.js'))});
      const { setChunkWorkerCount } = await import(${JSON.stringify(path.join(DIST, 'repo/chunk-worker.js'))});
      setChunkWorkerCount(0);
      const repo = await Repository.open(${JSON.stringify(data)}, { chunkSize: ${CS} });
      const fs = await import('node:fs');
      const put = repo.store.put.bind(repo.store);
      let n = 0;
      repo.store.put = async (...a) => {
        if (++n === 4) {
          // Kill the process while this chunk's temp file exists, as kill -9 mid-write would.
          fs.promises.rename = async () => process.kill(process.pid, 'SIGKILL');
        }
        return put(...a);
      };
      await backup(repo, { vm: 'killed', disks: [{ name: 'disk0', source: ${JSON.stringify(src)} }] });`;
    try {
      execFileSync(process.execPath, ['--input-type=module', '-e', script], { stdio: 'pipe' });
    } catch (err) {
      expect((err as { signal?: string }).signal, String((err as { stderr?: Buffer }).stderr)).toBe('SIGKILL');
    }
    expect(fs.readdirSync(path.join(data, 'repo', 'tmp')).some((f) => f.startsWith('chunk-'))).toBe(true);

    const repo = await Repository.open(data, { chunkSize: CS });
    try {
      expect(leftovers(path.join(data, 'repo'))).toEqual([]);
      const p = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
      expect((await stored(repo)).size).toBe(32);
      expect(await verify(repo)).toMatchObject({ ok: true, points: 1, problems: [] });
      expect((await repo.point('vm1')).id).toBe(p.id);
    } finally {
      await repo.close();
    }
  });
});
