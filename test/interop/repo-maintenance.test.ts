/**
 * Repository maintenance while serving, through the CLI and real clients:
 *  - corruption: a flipped byte in a stored chunk is named by `rebound verify` with every restore
 *    point it breaks, and an NBD read of that range fails with EIO (qemu-io), not wrong data;
 *  - prune + gc while an export of an older restore point is being read and a backup is running:
 *    the reader never sees an error or wrong data, nothing referenced disappears, and unreferenced
 *    chunks are removed once nothing uses them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig, validateConfig } from '../../src/config/schema.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { NbdClient } from '../../src/nbd/client.js';
import type { PointManifest } from '../../src/repo/manifest.js';
import { silentLogger } from '../../src/util/log.js';
import { cli } from '../helpers/cli.js';
import { makeImage, tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run } from '../helpers/run.js';

const missing = missingPeers('qemu-io');
const MiB = 1024 * 1024;
let dir: string;
let daemon: Daemon;
let server: string;
let nbd: string;

beforeAll(async () => {
  dir = tempDir('rebound-maint-');
  const config = validateConfig({ ...defaultConfig({}), sourceDirs: [os.tmpdir()], targetDirs: [os.tmpdir()], dataDir: path.join(dir, 'data'), nbd: ['127.0.0.1:0'], http: '127.0.0.1:0', chunkSize: 256 * 1024, cacheSize: 1024 * 1024 });
  daemon = await Daemon.start(config, silentLogger);
  server = `http://${daemon.endpoints.http}`;
  nbd = `nbd://${daemon.endpoints.nbd[0]}`;
});
afterAll(async () => {
  await daemon.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const rb = (...args: string[]) => cli(['--server', server, '--data', daemon.config.dataDir, ...args]);

async function backup(vm: string, img: string): Promise<PointManifest> {
  const r = await rb('backup', vm, '--disk', `disk0=${img}`, '--json');
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).result as PointManifest;
}

describe.skipIf(missing.length > 0)('repository maintenance while serving', () => {
  it('verify names a corrupt chunk and every point it breaks; reading it over NBD gives EIO', async () => {
    const img = path.join(dir, 'c.img');
    makeImage(img, { size: 4 * MiB, data: [[0, 4 * MiB]] });
    const p1 = await backup('corrupt', img);
    const p2 = await backup('corrupt', img); // same data: every chunk is shared by both points
    expect((await rb('verify', 'corrupt')).code).toBe(0);

    const index = await daemon.repo.readIndex(p1, 'disk0');
    const hex = Buffer.from(index.digest(2)!).toString('hex');
    const file = daemon.repo.store.pathOf(hex);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 10] ^= 0x40;
    fs.writeFileSync(file, bytes);
    daemon.repo.cache.clear();

    const v = await rb('verify');
    expect(v.code).toBe(1);
    expect(v.stdout).toContain(`chunk ${hex}: corrupt`);
    expect(v.stdout).toContain(`breaks corrupt@${p1.id} disk disk0 (chunk 2)`);
    expect(v.stdout).toContain(`breaks corrupt@${p2.id} disk disk0 (chunk 2)`);
    const json = JSON.parse((await rb('verify', `corrupt@${p2.id}`, '--json')).stdout);
    expect(json.ok).toBe(false);

    const bad = await run('qemu-io', ['-r', '-f', 'raw', '-c', `read ${2 * 256 * 1024 + 100} 4096`, `${nbd}/corrupt@latest/disk0`]);
    expect(bad.stdout + bad.stderr).toMatch(/Input\/output error/);
    const good = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4096', '-c', `read ${3 * 256 * 1024} 4096`, `${nbd}/corrupt@latest/disk0`]);
    expect(good.stdout + good.stderr).not.toMatch(/error/i);
    bytes[bytes.length - 10] ^= 0x40; // repair, so the next test starts from a healthy repository
    fs.writeFileSync(file, bytes);
  });

  it('prune and gc while an old point is read over NBD and a backup runs: nothing in use disappears', async () => {
    const img = path.join(dir, 'g.img');
    const v1 = makeImage(img, { size: 8 * MiB, data: [[0, 8 * MiB]], seed: 11 });
    const p1 = await backup('gcvm', img);
    makeImage(img, { size: 8 * MiB, data: [[0, 8 * MiB]], seed: 12 });
    await backup('gcvm', img);
    const v3 = makeImage(img, { size: 8 * MiB, data: [[0, 8 * MiB]], seed: 13 });
    const p3 = await backup('gcvm', img);

    // A client keeps reading the oldest point and checks every byte.
    const reader = await NbdClient.connect(`${nbd}/gcvm@${p1.id}/disk0`);
    let stop = false;
    let reads = 0;
    const reading = (async () => {
      const buf = Buffer.alloc(256 * 1024);
      while (!stop) {
        const off = Math.floor(Math.random() * 32) * 256 * 1024;
        await reader.read(buf, off);
        if (!buf.equals(v1.subarray(off, off + buf.length))) throw new Error(`wrong data at ${off}`);
        reads++;
      }
    })();

    // A backup of another VM runs at the same time.
    const big = path.join(dir, 'big.img');
    const bigContent = makeImage(big, { size: 32 * MiB, data: [[0, 32 * MiB]], seed: 9 });
    const backingUp = backup('other', big);

    const pr = await rb('prune', 'gcvm', '--keep-last', '1', '--json');
    expect(pr.code, pr.stderr).toBe(0);
    expect(JSON.parse(pr.stdout).removed).toHaveLength(2);
    const gc1 = await rb('gc', '--json');
    expect(gc1.code, gc1.stderr).toBe(0);
    const r1 = JSON.parse(gc1.stdout);
    expect(r1.removedChunks).toBeGreaterThan(0); // point 2's chunks: nobody uses them

    await backingUp;
    stop = true;
    await reading;
    expect(reads).toBeGreaterThan(5);
    await reader.close();
    await new Promise((r) => setTimeout(r, 100)); // the retired export closes after the client leaves

    // Now point 1's chunks are unused too; the newest point and the other VM are intact.
    const gc2 = JSON.parse((await rb('gc', '--json')).stdout);
    expect(gc2.removedChunks).toBeGreaterThan(0);
    expect((await rb('verify')).stdout).toMatch(/^OK/);
    for (const [uri, content] of [[`${nbd}/gcvm@${p3.id}/disk0`, v3], [`${nbd}/other@latest/disk0`, bigContent]] as const) {
      const c = await NbdClient.connect(uri);
      const all = Buffer.alloc(c.size);
      for (let off = 0; off < c.size; off += 4 * MiB) await c.read(all.subarray(off, off + 4 * MiB), off);
      await c.close();
      expect(all.equals(content), uri).toBe(true);
    }
    const list = JSON.parse((await rb('list', 'gcvm', '--json')).stdout);
    expect(list.points.map((p: PointManifest) => p.id)).toEqual([p3.id]);
  });
});
