/**
 * Backups with real peers: a raw image and an nbd:// source served by qemu-nbd are backed up through
 * the CLI; the exported restore points compare identical with qemu-img; an incremental backup from
 * a QEMU dirty bitmap (qemu-img bitmap --add, writes through qemu-io, qemu-nbd -B) reads only the
 * dirty chunks and yields a restore point equal to the changed image; restore writes it back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig, validateConfig } from '../../src/config/schema.js';
import { Daemon } from '../../src/daemon/daemon.js';
import type { PointManifest } from '../../src/repo/manifest.js';
import { silentLogger } from '../../src/util/log.js';
import { cli } from '../helpers/cli.js';
import { makeImage, tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const missing = missingPeers('qemu-img', 'qemu-io', 'qemu-nbd');
const MiB = 1024 * 1024;
let dir: string;
let daemon: Daemon;
let server: string;
let nbd: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  if (missing.length) return;
  dir = tempDir('rebound-repo-');
  const config = validateConfig({ ...defaultConfig({}), sourceDirs: [os.tmpdir()], targetDirs: [os.tmpdir()], dataDir: path.join(dir, 'data'), nbd: ['127.0.0.1:0'], http: '127.0.0.1:0', chunkSize: 256 * 1024 });
  daemon = await Daemon.start(config, silentLogger);
  server = `http://${daemon.endpoints.http}`;
  nbd = `nbd://${daemon.endpoints.nbd[0]}`;
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  if (missing.length) return;
  await daemon.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Starts qemu-nbd on a Unix socket and waits until it accepts connections. */
async function qemuNbd(args: string[], sock: string): Promise<ChildProcess> {
  const child = spawn('qemu-nbd', ['-k', sock, '-t', ...args], { stdio: 'ignore' });
  children.push(child);
  for (let i = 0; i < 100 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 100));
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await gone;
}

async function backupJson(args: string[]): Promise<PointManifest> {
  const r = await cli(['--server', server, '--data', daemon.config.dataDir, 'backup', ...args, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).result as PointManifest;
}

describe.skipIf(missing.length > 0)('repository backups with real peers', () => {
  it('backs up a raw image; the exported restore point is identical (qemu-img compare) and restores byte for byte', async () => {
    const img = path.join(dir, 'raw.img');
    makeImage(img, { size: 24 * MiB + 4096, data: [[0, 5 * MiB], [12 * MiB + 333, 2 * MiB], [24 * MiB - 4096, 8192]] });
    const cfg = path.join(dir, 'vm.xml');
    fs.writeFileSync(cfg, '<domain type="kvm"><name>web1</name></domain>\n');
    const m = await backupJson(['web1', '--disk', `disk0=${img}`, '--config', cfg, '--label', 'fs', '--tag', 'nightly']);
    expect(m).toMatchObject({ vm: 'web1', label: 'fs', tags: ['nightly'], configs: ['vm.xml'] });
    for (const point of [m.id, 'latest']) {
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `${nbd}/web1@${point}/disk0`, img]);
      expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
    }
    const info = await runOk('qemu-img', ['info', '--output=json', `${nbd}/web1@latest/disk0`]);
    expect(JSON.parse(info.stdout)['virtual-size']).toBe(24 * MiB + 4096);

    const restored = path.join(dir, 'restored.img');
    const r = await cli(['--server', server, '--data', daemon.config.dataDir, 'restore', 'web1@latest', '--disk', 'disk0', '--to', restored]);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(restored).equals(fs.readFileSync(img))).toBe(true);
    expect(fs.statSync(restored).blocks * 512).toBeLessThan(12 * MiB); // sparse: zero chunks not written

    // Restore into production storage served over NBD (a writable qemu-nbd over stale data).
    const target = path.join(dir, 'prod.img');
    fs.writeFileSync(target, Buffer.alloc(24 * MiB + 4096, 0xee));
    const sock = path.join(dir, 'prod.sock');
    const q = await qemuNbd(['-f', 'raw', '-x', 'prod', target], sock);
    try {
      const rn = await cli(['--server', server, '--data', daemon.config.dataDir, 'restore', `web1@${m.id}`, '--disk', 'disk0', '--to', `nbd+unix:///prod?socket=${sock}`]);
      expect(rn.code, rn.stderr).toBe(0);
    } finally {
      await stop(q);
    }
    expect(fs.readFileSync(target).equals(fs.readFileSync(img))).toBe(true); // zero chunks were zeroed too

    const show = await cli(['--server', server, '--data', daemon.config.dataDir, 'show', 'web1@latest']);
    expect(show.stdout).toContain(`web1@${m.id}/disk0`);
    expect(show.stdout).toContain('config files: vm.xml');
  });

  it('backs up an nbd:// source served by qemu-nbd, skipping holes it reports', async () => {
    const qcow = path.join(dir, 'src.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', qcow, '32M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 3M', '-c', 'write -P 0x22 20M 1M', qcow]);
    const sock = path.join(dir, 'src.sock');
    const q = await qemuNbd(['-r', '-f', 'qcow2', '-x', 'src', qcow], sock);
    try {
      const m = await backupJson(['db1', '--disk', `data=nbd+unix:///src?socket=${sock}`]);
      // Only the allocated 4 MiB are read: qemu-nbd reports the rest as holes.
      expect(m.disks[0]!.readBytes).toBe(4 * MiB);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', `${nbd}/db1@latest/data`, qcow]);
      expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
    } finally {
      await stop(q);
    }
  });

  it('an incremental backup from a QEMU dirty bitmap reads only the dirty chunks and equals the changed image', async () => {
    const qcow = path.join(dir, 'vm.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', qcow, '64M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 16M', '-c', 'write -P 0x44 40M 8M', qcow]);
    const sock = path.join(dir, 'vm.sock');
    let q = await qemuNbd(['-r', '-f', 'qcow2', '-x', 'vm', qcow], sock);
    const full = await backupJson(['app1', '--disk', `disk0=nbd+unix:///vm?socket=${sock}`]);
    await stop(q);
    expect(full.disks[0]!.readBytes).toBe(24 * MiB);

    // Changed-block tracking starts now: a persistent bitmap, then the guest's writes.
    await runOk('qemu-img', ['bitmap', '--add', qcow, 'cbt']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x55 1M 4k', '-c', 'write -P 0x66 30M 300k', '-c', 'write -z 44M 256k', qcow]);
    q = await qemuNbd(['-r', '-f', 'qcow2', '-x', 'vm', '-B', 'cbt', qcow], sock);
    try {
      const inc = await backupJson(['app1', '--disk', `disk0=nbd+unix:///vm?socket=${sock}`, '--dirty-bitmap', 'cbt']);
      const d = inc.disks[0]!;
      // 256 KiB chunks: the 4 KiB write dirties 1 chunk, 300 KiB at 30M 2 chunks, the zeroed 256 KiB 1.
      expect(d.incremental).toEqual({ bitmap: 'cbt', basePoint: full.id, dirtyChunks: 4 });
      expect(d.readBytes).toBeLessThanOrEqual(4 * 256 * 1024);
      expect(d.readBytes).toBeGreaterThan(0);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', `${nbd}/app1@${inc.id}/disk0`, qcow]);
      expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
      // The older point still shows the old data.
      const old = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x33 1M 4k', `${nbd}/app1@${full.id}/disk0`]);
      expect(old.stdout + old.stderr).not.toMatch(/fail|mismatch/i);
    } finally {
      await stop(q);
    }
    const list = await cli(['--server', server, '--data', daemon.config.dataDir, 'list', 'app1', '--json']);
    expect(JSON.parse(list.stdout).points.map((p: PointManifest) => p.id)).toHaveLength(2);
  });

  it('reports a missing bitmap clearly', async () => {
    const qcow = path.join(dir, 'nobitmap.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', qcow, '4M']);
    const sock = path.join(dir, 'nb.sock');
    const q = await qemuNbd(['-r', '-f', 'qcow2', '-x', 'x', qcow], sock);
    try {
      const r = await cli(['--server', server, '--data', daemon.config.dataDir, 'backup', 'nb1', '--disk', `d=nbd+unix:///x?socket=${sock}`, '--dirty-bitmap', 'nope']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/qemu:dirty-bitmap:nope/);
    } finally {
      await stop(q);
    }
  });
});
