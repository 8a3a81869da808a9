/**
 * Regression: a backup killed with `kill -9` left `chunks/xx/yy/HEX.tmp-PID-RAND` files that
 * neither a restart nor gc removed. Now Repository.open removes every temp file no write of this
 * process uses (one daemon per data directory), and gc removes those older than its start.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { gc } from '../../src/repo/gc.js';
import { backup } from '../../src/repo/ingest.js';
import { Repository } from '../../src/repo/repository.js';
import { verify } from '../../src/repo/verify.js';
import { makeImage, tempDir } from '../helpers/images.js';

const CS = 65536;
const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

async function open(data: string): Promise<Repository> {
  const repo = await Repository.open(data, { chunkSize: CS });
  repos.push(repo);
  return repo;
}

async function stored(repo: Repository): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const c of repo.store.list()) out.add(c.hex);
  return out;
}

function tempFiles(repo: Repository): string[] {
  return (fs.readdirSync(repo.store.dir, { recursive: true }) as string[]).filter((f) => /\.tmp-\d+-[0-9a-f]+$/.test(f)).sort();
}

/**
 * Leaves half-written chunk temp files the way ChunkStore.put names them, from a child process
 * that then kills itself with SIGKILL: the files carry a dead writer's PID.
 */
function killedWriter(chunksDir: string, hexes: string[]): string[] {
  const script = `
    const fs = require('node:fs'), path = require('node:path');
    for (const hex of JSON.parse(process.argv[1])) {
      const d = path.join(${JSON.stringify(chunksDir)}, hex.slice(0, 2), hex.slice(2, 4));
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, hex + '.tmp-' + process.pid + '-0badf00d'), Buffer.alloc(1000, 7));
    }
    process.kill(process.pid, 'SIGKILL');`;
  try {
    execFileSync(process.execPath, ['-e', script, JSON.stringify(hexes)], { stdio: 'ignore' });
    throw new Error('the writer was not killed');
  } catch (err) {
    expect((err as { signal?: string }).signal).toBe('SIGKILL');
  }
  return hexes;
}

describe('chunk temp files of killed writers', () => {
  it('are removed when the repository is opened again; chunks and verify stay intact', async () => {
    const d = tempDir();
    dirs.push(d);
    const data = path.join(d, 'data');
    const src = path.join(d, 'a.img');
    makeImage(src, { size: 8 * CS, data: [[0, 8 * CS]] });
    let repo = await open(data);
    const p = await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    const chunks = await stored(repo);
    const [someChunk] = [...chunks];
    // One beside a stored chunk, one in a directory of its own; and one with our own PID (a
    // restarted container reuses PIDs) that no write of ours uses.
    killedWriter(repo.store.dir, [someChunk!.slice(0, 4) + 'f'.repeat(60), crypto.randomBytes(32).toString('hex')]);
    const own = repo.store.pathOf(crypto.randomBytes(32).toString('hex')) + `.tmp-${process.pid}-deadbeef`;
    fs.mkdirSync(path.dirname(own), { recursive: true });
    fs.writeFileSync(own, 'half');
    expect(tempFiles(repo)).toHaveLength(3);
    await repo.close();
    repos.splice(repos.indexOf(repo), 1);

    repo = await open(data);
    expect(tempFiles(repo)).toEqual([]);
    expect(await stored(repo)).toEqual(chunks);
    const report = await verify(repo);
    expect(report).toMatchObject({ ok: true, points: 1, problems: [] });
    expect((await repo.point('vm1')).id).toBe(p.id);
  });

  it('gc removes those older than its start and keeps newer ones and every chunk', async () => {
    const d = tempDir();
    dirs.push(d);
    const src = path.join(d, 'a.img');
    makeImage(src, { size: 4 * CS, data: [[0, 4 * CS]] });
    const repo = await open(path.join(d, 'data'));
    await backup(repo, { vm: 'vm1', disks: [{ name: 'disk0', source: src }] });
    const chunks = await stored(repo);
    const [old1, old2, fresh] = killedWriter(repo.store.dir, [0, 1, 2].map(() => crypto.randomBytes(32).toString('hex')));
    const all = tempFiles(repo);
    expect(all).toHaveLength(3);
    const file = (hex: string): string => path.join(repo.store.dir, all.find((f) => path.basename(f).startsWith(hex))!);
    const hourAgo = new Date(Date.now() - 3_600_000);
    const inAnHour = new Date(Date.now() + 3_600_000);
    for (const h of [old1!, old2!]) fs.utimesSync(file(h), hourAgo, hourAgo);
    fs.utimesSync(file(fresh!), inAnHour, inAnHour);

    const res = await gc(repo);
    expect(res).toMatchObject({ removedChunks: 0, removedTempFiles: 2 });
    expect(tempFiles(repo).map((f) => path.basename(f).slice(0, 64))).toEqual([fresh]);
    expect(await stored(repo)).toEqual(chunks);
    expect(await verify(repo)).toMatchObject({ ok: true, problems: [] });
  });
});
