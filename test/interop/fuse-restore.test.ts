/**
 * File-level restore through the FUSE mount, with real peers: disks labelled by sfdisk (GPT; MBR
 * with logical partitions) holding ext4 filesystems made by `mke2fs -d` from known trees are backed
 * up through the CLI; the daemon's mount shows them; each partition file is loop-mounted read-only
 * (`mount -o loop,ro`, as docs/file-restore.md tells operators) and compared with `diff -r`.
 * Also: a session's live disk file shows its overlay's writes, the tree follows backups and
 * prunes, a busy unmount is refused with a clear message, a stale mount of a killed daemon is
 * cleaned up at start, and shutdown unmounts.
 *
 * The daemon runs in this process, so everything that reads through the mount (directly or through a
 * loop device) must use async fs calls: a synchronous call blocks the main thread that serves it.
 */
import fs from 'node:fs';
import os from 'node:os';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CowOverlay } from '../../src/blockdev/layers/cow/cow-overlay.js';
import { readPartitionTable } from '../../src/blockdev/partitions.js';
import { defaultConfig, validateConfig } from '../../src/config/schema.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { sessionEntryName } from '../../src/exports/catalog.js';
import { FuseMounts } from '../../src/fuse/manager.js';
import { findMount } from '../../src/fuse/mount.js';
import type { PointManifest } from '../../src/repo/manifest.js';
import { silentLogger } from '../../src/util/log.js';
import { cli } from '../helpers/cli.js';
import { startDaemonProcess } from '../helpers/daemon-process.js';
import { label, LoopMounts, makeExt4, MiB, place, writeTree } from '../helpers/fuse-images.js';
import { patternBuffer, tempDir } from '../helpers/images.js';
import { captureLog, type LogEvent } from '../helpers/nbd-interop.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

function missingFuse(): string[] {
  const missing = missingPeers('sfdisk', 'mke2fs', 'debugfs', 'losetup', 'mount', 'umount', 'fusermount', 'diff', 'cmp');
  const why = process.getuid?.() !== 0 ? 'root (loop mounts)' : !fs.existsSync('/dev/fuse') ? '/dev/fuse' : undefined;
  if (why) {
    if (process.env.CI) throw new Error(`CI is missing ${why} for the FUSE interop tests`);
    console.warn(`skipping: missing ${why}`);
    missing.push(why);
  }
  return missing;
}

const missing = missingFuse();
let dir: string;
let daemon: Daemon;
let server: string;
let mnt: string;
let events: LogEvent[];
const loops = new LoopMounts();
const extraMounts: FuseMounts[] = [];

beforeAll(async () => {
  if (missing.length) return;
  dir = tempDir('rebound-fuse-');
  mnt = path.join(dir, 'fuse');
  const config = validateConfig({ ...defaultConfig({}), sourceDirs: [os.tmpdir()], targetDirs: [os.tmpdir()], dataDir: path.join(dir, 'data'), nbd: [], http: '127.0.0.1:0', chunkSize: 256 * 1024, fuse: mnt });
  const cap = captureLog();
  events = cap.events;
  daemon = await Daemon.start(config, cap.log);
  server = `http://${daemon.endpoints.http}`;
});

afterAll(async () => {
  if (missing.length) return;
  await loops.cleanup();
  for (const m of extraMounts) await m.close();
  await daemon?.close();
  for (const d of [mnt, path.join(dir, 'fuse-cli'), path.join(dir, 'fuse-session'), path.join(dir, 'fuse-stale')]) {
    if (findMount(d)) await run('fusermount', ['-uz', d]);
  }
  // Never recurse into a mount that is still there (it would be read, or hang).
  const left = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4]?.startsWith(dir));
  if (left.length) console.warn(`not removing ${dir}: still mounted:\n${left.join('\n')}`);
  else fs.rmSync(dir, { recursive: true, force: true });
});

async function backup(vm: string, disk: string, extra: string[] = []): Promise<PointManifest> {
  const r = await cli(['--server', server, '--data', daemon.config.dataDir, 'backup', vm, '--disk', `disk0=${disk}`, ...extra, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).result as PointManifest;
}

/** Builds a labelled disk whose partitions `fs` hold ext4 filesystems of fresh trees; returns the trees. */
async function buildDisk(name: string, bytes: number, script: string, fsParts: Record<number, number>, dirty: number[] = []): Promise<{ disk: string; trees: Record<number, string>; layout: Awaited<ReturnType<typeof label>> }> {
  const disk = path.join(dir, `${name}.img`);
  const layout = await label(disk, bytes, script);
  const trees: Record<number, string> = {};
  for (const [num, fsBytes] of Object.entries(fsParts)) {
    const tree = path.join(dir, `${name}-tree${num}`);
    writeTree(tree, `${name}-${num}`);
    const img = path.join(dir, `${name}-p${num}.ext4`);
    await makeExt4(img, tree, fsBytes);
    // A crash-consistent backup: the journal still needs replaying.
    if (dirty.includes(Number(num))) await runOk('debugfs', ['-w', '-R', 'feature needs_recovery', img]);
    const part = layout.find((p) => p.number === Number(num))!;
    expect(fsBytes).toBeLessThanOrEqual(part.size);
    place(disk, img, part.start);
    fs.rmSync(img);
    trees[Number(num)] = tree;
  }
  return { disk, trees, layout };
}

async function diffTree(partFile: string, tree: string, tag: string, extra: string[] = []): Promise<void> {
  const at = path.join(dir, `loop-${tag}`);
  await loops.mount(partFile, at, extra);
  try {
    const d = await run('diff', ['-r', '--no-dereference', '-x', 'lost+found', tree, at]);
    expect(d.code, `diff -r ${tree} ${at}:\n${d.stdout}${d.stderr}`).toBe(0);
    expect(await fsp.readFile(path.join(at, 'etc/hostname'), 'utf8')).toBe(fs.readFileSync(path.join(tree, 'etc/hostname'), 'utf8'));
  } finally {
    await loops.umount(at);
  }
}

describe.skipIf(missing.length > 0)('FUSE file-level restore with real peers', () => {
  it('GPT disk: each partition file loop-mounts read-only and equals its source tree; the disk file equals the image', async () => {
    const { disk, trees, layout } = await buildDisk('gpt', 24 * MiB, 'label: gpt\nstart=2048, size=8M, type=linux, name=alpha\nsize=12M, type=linux, name=beta\n', { 1: 8 * MiB, 2: 12 * MiB });
    const cfg = path.join(dir, 'gptvm.xml');
    fs.writeFileSync(cfg, '<domain><name>gptvm</name></domain>\n');
    const m = await backup('gptvm', disk, ['--config', cfg]);
    const pointDir = path.join(mnt, 'vms/gptvm', m.id);
    expect((await fsp.readdir(pointDir)).sort()).toEqual(['config', 'disk0.parts', 'disk0.raw']);
    expect(await fsp.readlink(path.join(mnt, 'vms/gptvm/latest'))).toBe(m.id);
    expect((await fsp.readdir(path.join(pointDir, 'disk0.parts'))).sort()).toEqual(['1', '2']);
    expect(await fsp.readFile(path.join(pointDir, 'config/gptvm.xml'), 'utf8')).toContain('<name>gptvm</name>');
    for (const p of layout) expect((await fsp.stat(path.join(pointDir, `disk0.parts/${p.number}`))).size).toBe(p.size);
    const cmp = await run('cmp', [disk, path.join(pointDir, 'disk0.raw')]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    await diffTree(path.join(mnt, 'vms/gptvm/latest/disk0.parts/1'), trees[1]!, 'gpt1');
    await diffTree(path.join(pointDir, 'disk0.parts/2'), trees[2]!, 'gpt2');
  });

  it('MBR disk with logical partitions: numbering and offsets agree with sfdisk; the logical partition loop-mounts and equals its tree', async () => {
    const script = 'label: dos\nstart=2048, size=8M, type=83\nstart=18432, size=20M, type=5\nstart=20480, size=8M, type=83\nstart=38912, size=2M, type=83\n';
    const { disk, trees, layout } = await buildDisk('mbr', 32 * MiB, script, { 1: 8 * MiB, 5: 8 * MiB }, [1]);
    const m = await backup('mbrvm', disk);
    const parts = path.join(mnt, 'vms/mbrvm', m.id, 'disk0.parts');
    // sfdisk lists the extended container (2) too; it is a pointer, not a data partition.
    expect((await fsp.readdir(parts)).sort()).toEqual(['1', '5', '6']);
    const img = await daemon.repo.openImage(await daemon.repo.point('mbrvm', m.id), 'disk0');
    const table = await readPartitionTable(img, 'mbrvm');
    await img.close();
    expect(table.partitions.map((p) => ({ number: p.number, start: p.offset, size: p.size }))).toEqual(layout.filter((p) => p.number !== 2));
    await diffTree(path.join(parts, '5'), trees[5]!, 'mbr5');
    // Partition 1 has a dirty journal: a plain read-only mount fails, `noload` (docs/file-restore.md) works.
    await fsp.mkdir(path.join(dir, 'loop-mbr1-plain'), { recursive: true });
    const plain = await run('mount', ['-t', 'ext4', '-o', 'loop,ro', path.join(parts, '1'), path.join(dir, 'loop-mbr1-plain')]);
    if (plain.code === 0) await runOk('umount', [path.join(dir, 'loop-mbr1-plain')]);
    expect(plain.code, 'a dirty ext4 must not mount read-only without noload').not.toBe(0);
    await diffTree(path.join(parts, '1'), trees[1]!, 'mbr1', ['noload']);
  });

  it('a malformed partition table fails the .parts listing with EIO (and a clear log line); the daemon and the disk file are fine', async () => {
    const disk = path.join(dir, 'broken.img');
    const buf = Buffer.alloc(4 * MiB);
    buf[446 + 4] = 0x83; // partition 1: type Linux, sectors 2048 + 1,000,000: far past the end
    buf.writeUInt32LE(2048, 446 + 8);
    buf.writeUInt32LE(1_000_000, 446 + 12);
    buf[510] = 0x55;
    buf[511] = 0xaa;
    fs.writeFileSync(disk, buf);
    const m = await backup('broken', disk);
    const point = path.join(mnt, 'vms/broken', m.id);
    await expect(fsp.readdir(path.join(point, 'disk0.parts'))).rejects.toThrow(/EIO|input\/output error/i);
    expect((await fsp.readFile(path.join(point, 'disk0.raw'))).equals(buf)).toBe(true);
    const mounts = JSON.parse((await cli(['--server', server, '--data', daemon.config.dataDir, 'mount', '--json'])).stdout) as { mounts: Array<{ dir: string; errors: number }> };
    expect(mounts.mounts.find((x) => x.dir === mnt)!.errors).toBeGreaterThan(0);
    const line = events.find((e) => e.msg === 'FUSE request failed' && String(e.path).includes('/vms/broken/'));
    expect(line?.err).toMatch(/^broken@\d{8}T\d{6}Z\/disk0: malformed partition table: partition 1 \(sectors 2048\+1000000\) extends past the end of the disk/);
  });

  it('sizes, mtimes and inode numbers are stable across an unmount and a mount through the CLI; the tree follows backups and prunes', async () => {
    const disk = path.join(dir, 'small.img');
    fs.writeFileSync(disk, patternBuffer(0, 4 * MiB, 11));
    const first = await backup('small', disk);
    const file = path.join(mnt, 'vms/small', first.id, 'disk0.raw');
    const st = await fsp.stat(file);
    expect(st.size).toBe(4 * MiB);
    expect(st.mtime.getTime()).toBe(new Date(first.createdAt).getTime()); // the backup time
    expect(st.mode & 0o777).toBe(0o444);
    await expect(fsp.open(file, 'r+')).rejects.toThrow(/EROFS|read-only/);

    const cliMnt = path.join(dir, 'fuse-cli');
    const mounted = await cli(['--server', server, '--data', daemon.config.dataDir, 'mount', cliMnt]);
    expect(mounted.code, mounted.stderr).toBe(0);
    const list = JSON.parse((await cli(['--server', server, '--data', daemon.config.dataDir, 'mount', '--json'])).stdout) as { mounts: Array<{ dir: string }> };
    expect(list.mounts.map((x) => x.dir).sort()).toEqual([mnt, cliMnt].sort());
    const st2 = await fsp.stat(path.join(cliMnt, 'vms/small', first.id, 'disk0.raw'));
    expect([st2.ino, st2.size, st2.mtime.getTime()]).toEqual([st.ino, st.size, st.mtime.getTime()]);
    const um = await cli(['--server', server, '--data', daemon.config.dataDir, 'unmount', cliMnt]);
    expect(um.code, um.stderr).toBe(0);
    expect(findMount(cliMnt)).toBeUndefined();
    const again = await cli(['--server', server, '--data', daemon.config.dataDir, 'unmount', cliMnt]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/no file tree of this daemon is mounted at/);
    // Mounting twice at the same place is a no-op; a non-empty directory or a foreign mount point is refused.
    expect((await cli(['--server', server, '--data', daemon.config.dataDir, 'mount', mnt])).code).toBe(0);
    const full = path.join(dir, 'not-empty');
    await fsp.mkdir(full, { recursive: true });
    await fsp.writeFile(path.join(full, 'x'), 'x');
    const refused = await cli(['--server', server, '--data', daemon.config.dataDir, 'mount', full]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/cannot mount at .*not-empty: the directory is not empty/);
    const tmpfs = path.join(dir, 'tmpfs');
    await fsp.mkdir(tmpfs, { recursive: true });
    await runOk('mount', ['-t', 'tmpfs', 'rebound-test', tmpfs]);
    try {
      const foreign = await cli(['--server', server, '--data', daemon.config.dataDir, 'mount', tmpfs]);
      expect(foreign.code).toBe(1);
      expect(foreign.stderr).toMatch(/it is already a mount point \(tmpfs from rebound-test\)/);
    } finally {
      await runOk('umount', [tmpfs]);
    }

    await new Promise((r) => setTimeout(r, 1100)); // restore point ids have one-second resolution
    const second = await backup('small', disk);
    expect((await fsp.readdir(path.join(mnt, 'vms/small'))).sort()).toEqual([first.id, second.id, 'latest'].sort());
    expect(await fsp.readlink(path.join(mnt, 'vms/small/latest'))).toBe(second.id);
    const pr = await cli(['--server', server, '--data', daemon.config.dataDir, 'prune', 'small', '--keep-last', '1']);
    expect(pr.code, pr.stderr).toBe(0);
    expect((await fsp.readdir(path.join(mnt, 'vms/small'))).sort()).toEqual([second.id, 'latest'].sort());
  });

  it('a busy mount is not unmounted, with a message naming the cause; --lazy detaches it and open files keep working', async () => {
    const cliMnt = path.join(dir, 'fuse-cli');
    expect((await cli(['--server', server, '--data', daemon.config.dataDir, 'mount', cliMnt])).code).toBe(0);
    const at = path.join(dir, 'loop-busy');
    await loops.mount(path.join(cliMnt, 'vms/gptvm/latest/disk0.parts/1'), at);
    const busy = await cli(['--server', server, '--data', daemon.config.dataDir, 'unmount', cliMnt]);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/cannot unmount .*fuse-cli: it is busy .*losetup -j.*--lazy/);
    expect(findMount(cliMnt)).toBeDefined();
    expect(await fsp.readFile(path.join(at, 'etc/hostname'), 'utf8')).toBe('gpt-1\n'); // still serving
    // --lazy detaches at once; the loop-mounted partition keeps working until it is unmounted.
    const lazy = await cli(['--server', server, '--data', daemon.config.dataDir, 'unmount', '--lazy', cliMnt]);
    expect(lazy.code, lazy.stderr).toBe(0);
    expect(findMount(cliMnt)).toBeUndefined();
    const big = await fsp.readFile(path.join(at, 'var/log/big.bin'));
    expect(big.equals(fs.readFileSync(path.join(dir, 'gpt-tree1/var/log/big.bin')))).toBe(true);
    await loops.umount(at);
    // Mounting there again works, and a mount nobody uses unmounts at once.
    expect((await cli(['--server', server, '--data', daemon.config.dataDir, 'mount', cliMnt])).code).toBe(0);
    const ok = await cli(['--server', server, '--data', daemon.config.dataDir, 'unmount', cliMnt]);
    expect(ok.code, ok.stderr).toBe(0);
  });

  it("a session's disk file shows the guest's writes from its overlay over the restore point", async () => {
    const m = await daemon.repo.point('gptvm', 'latest');
    const base = await daemon.repo.openImage(m, 'disk0');
    const overlay = await CowOverlay.open(base, { dir: path.join(dir, 'overlay-rec1'), baseId: `repo:gptvm@${m.id}/disk0` });
    try {
      await overlay.write(Buffer.alloc(64 * 1024, 0x5a), 3 * MiB);
      await overlay.write(Buffer.from('written by the guest'), 10 * MiB + 123);
      // A mount of its own over the daemon's catalog (its restore points), with a session published
      // on FUSE only, over a device this test keeps owning.
      const fuse = new FuseMounts({ catalog: daemon.catalog.view('fuse'), log: silentLogger });
      extraMounts.push(fuse);
      const smnt = path.join(dir, 'fuse-session');
      await fuse.mount(smnt);
      expect(await fsp.readdir(path.join(smnt, 'sessions'))).toEqual([]);
      const entry = sessionEntryName('rec1', 'disk0');
      daemon.catalog.publish({
        name: entry, kind: 'session', disk: 'disk0', size: overlay.size, capabilities: overlay.capabilities(), publish: ['fuse'],
        session: { name: 'rec1', vm: 'gptvm', pointId: m.id, createdAt: new Date(), filesDir: path.join(dir, 'overlay-rec1') },
        device: overlay, owned: false,
      });
      const file = path.join(smnt, 'sessions/rec1/disk0.raw');
      const expected = fs.readFileSync(path.join(dir, 'gpt.img'));
      expected.fill(0x5a, 3 * MiB, 3 * MiB + 64 * 1024);
      expected.write('written by the guest', 10 * MiB + 123);
      expect((await fsp.readFile(file)).equals(expected)).toBe(true);
      // A write after the first read shows when the file is opened again.
      await overlay.write(Buffer.from('later write'), 5000);
      expect((await fsp.readFile(file)).subarray(5000, 5011).toString()).toBe('later write');
      // The restore point itself is unchanged.
      expect((await fsp.readFile(path.join(smnt, 'vms/gptvm', m.id, 'disk0.raw'))).subarray(5000, 5011).toString()).not.toBe('later write');
      await daemon.catalog.revoke(entry);
      expect(await fsp.readdir(path.join(smnt, 'sessions'))).toEqual([]);
      await fuse.unmount(smnt);
    } finally {
      await overlay.close();
    }
  });

  it('a stale mount left by a killed daemon is cleaned up when the next daemon starts', async () => {
    const data = path.join(dir, 'data-stale');
    const smnt = path.join(dir, 'fuse-stale');
    const args = ['--data', data, '--nbd', 'none', '--http', 'off', '--fuse', smnt];
    const first = await startDaemonProcess(args);
    expect(first.stdout()).toContain(`FUSE: file tree at ${smnt}`);
    expect((await fsp.readdir(smnt)).sort()).toEqual(['sessions', 'vms']);
    await first.stop('SIGKILL');
    expect(findMount(smnt)).toBeDefined();
    await expect(fsp.readdir(smnt)).rejects.toThrow(/ENOTCONN|not connected/);
    const second = await startDaemonProcess(args);
    try {
      expect((await fsp.readdir(smnt)).sort()).toEqual(['sessions', 'vms']);
      expect(second.stderr()).toMatch(/cleaned up a stale FUSE mount/);
    } finally {
      expect(await second.stop('SIGTERM')).toBe(0);
    }
    expect(findMount(smnt)).toBeUndefined(); // unmounted on shutdown
  });

  it('shutdown unmounts the configured mount', async () => {
    expect(findMount(mnt)).toBeDefined();
    await daemon.close();
    expect(findMount(mnt)).toBeUndefined();
    await runOk('true', []);
  });
});
