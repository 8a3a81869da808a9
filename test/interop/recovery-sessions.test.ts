/**
 * Recovery sessions against real clients: `rebound recover` publishes writable NBD exports at
 * once; qemu-io writes through them; sessions survive a daemon restart; the quota gives ENOSPC;
 * QoS limits measured with fio's nbd engine; discard; commit; migration to a qemu-nbd target
 * while writes are in flight, switch-over (every request answered once, later I/O on the target),
 * pause on a full target; and the restore point never changes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig, validateConfig } from '../../src/config/schema.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { NbdClient } from '../../src/nbd/client.js';
import { silentLogger } from '../../src/util/log.js';
import { cli } from '../helpers/cli.js';
import { patternBuffer, tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';
import { spawn, type ChildProcess } from 'node:child_process';

const missing = missingPeers('qemu-io', 'qemu-img', 'qemu-nbd', 'fio');
const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
let dir: string;
let data: string;
let daemon: Daemon;
let image: Buffer;
const children: ChildProcess[] = [];

async function startDaemon(): Promise<Daemon> {
  const config = validateConfig({ ...defaultConfig({}), sourceDirs: [os.tmpdir()], targetDirs: [os.tmpdir()], dataDir: data, nbd: ['127.0.0.1:0'], http: '127.0.0.1:0', chunkSize: 256 * 1024 });
  return Daemon.start(config, silentLogger);
}
const rb = (...args: string[]) => cli(['--server', `http://${daemon.endpoints.http}`, '--data', daemon.config.dataDir, ...args]);
const uri = (exp: string): string => `nbd://${daemon.endpoints.nbd[0]}/${exp}`;
async function rbJson<T>(...args: string[]): Promise<T> {
  const r = await rb(...args, '--json');
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

/** qemu-nbd serving `file` writable on a Unix socket; resolves with its URI. */
async function qemuNbd(file: string, sock: string): Promise<string> {
  const child = spawn('qemu-nbd', ['-f', 'raw', '-t', '-k', sock, '--cache=writeback', file], { stdio: 'ignore' });
  children.push(child);
  for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  return `nbd+unix:///?socket=${sock}`;
}

beforeAll(async () => {
  dir = tempDir('rebound-sessions-');
  data = path.join(dir, 'data');
  image = Buffer.concat([patternBuffer(0, SIZE / 2), Buffer.alloc(SIZE / 2)]); // half data, half zero
  fs.writeFileSync(path.join(dir, 'src.img'), image);
  daemon = await startDaemon();
  const r = await rb('backup', 'vm1', '--disk', `disk0=${path.join(dir, 'src.img')}`);
  expect(r.code, r.stderr).toBe(0);
}, 60_000);
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await daemon?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(missing.length > 0)('recovery sessions', () => {
  it('recover publishes a writable export at once; writes persist across a restart; the point is unchanged', async () => {
    const t = performance.now();
    const s = await rbJson<{ name: string; disks: Array<{ nbdUri: string }>; connect: { disks: Array<{ qemuDrive: string; libvirt: string }> } }>('recover', 'vm1', '--name', 'web');
    const ms = performance.now() - t;
    expect(ms).toBeLessThan(1000);
    expect(s.name).toBe('web');
    expect(s.connect.disks[0]!.qemuDrive).toContain('session/web/disk0');
    expect(s.connect.disks[0]!.libvirt).toContain("<source protocol='nbd' name='session/web/disk0'>");
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 64k', '-c', 'write -P 0xcd 20M 4k', '-c', 'flush', uri('session/web/disk0')]);
    await daemon.close();
    daemon = await startDaemon();
    const r = await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 1M 64k', '-c', 'read -P 0xcd 20M 4k', '-c', 'read -P 0 24M 4k', uri('session/web/disk0')]);
    expect(r.stdout).not.toContain('Pattern verification failed');
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri('vm1@latest/disk0'), path.join(dir, 'src.img')]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
    const report = await rbJson<{ sessions: Array<{ name: string; overlayBytes: number; disks: Array<{ io: { writes: number } }> }> }>('sessions');
    expect(report.sessions.find((x) => x.name === 'web')!.overlayBytes).toBe(64 * 1024 + 4096);
  });

  it('enforces the quota with ENOSPC and keeps serving; discard drops the session and unpins', async () => {
    await rbJson('recover', 'vm1', '--name', 'small', '--quota', '1M');
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 2M', uri('session/small/disk0')]);
    expect(r.stdout + r.stderr).toMatch(/No space left on device/);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 2 0 512k', '-c', 'read -P 2 0 512k', uri('session/small/disk0')]);
    const d = await rb('discard', 'small');
    expect(d.code, d.stderr).toBe(0);
    expect(fs.existsSync(path.join(data, 'sessions', 'small'))).toBe(false);
    expect(daemon.catalog.has('session/small/disk0')).toBe(false);
    expect((await rb('discard', 'small')).code).toBe(1);
  });

  it('limits IOPS per export within 10% (fio, nbd engine) and changes the limit live', async () => {
    await rbJson('recover', 'vm1', '--name', 'qos', '--iops', '150');
    const fio = async (): Promise<number> => {
      const r = await runOk('fio', ['--name=q', '--ioengine=nbd', `--uri=${uri('session/qos/disk0')}`, '--rw=randread', '--bs=4k', '--iodepth=8',
        '--time_based', '--runtime=3', '--size=16M', '--output-format=json'], { timeoutMs: 60_000 });
      // libnbd prints a connection line before fio's JSON.
      return (JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: Array<{ read: { iops: number } }> }).jobs[0]!.read.iops;
    };
    const first = await fio();
    expect(first).toBeGreaterThan(150 * 0.9);
    expect(first).toBeLessThan(150 * 1.1);
    const q = await rb('qos', 'qos', '--iops', '400');
    expect(q.code, q.stderr).toBe(0);
    const second = await fio();
    expect(second).toBeGreaterThan(400 * 0.9);
    expect(second).toBeLessThan(400 * 1.1);
    // The global limit caps all session exports together, on top of the per-session one.
    expect((await rb('qos', '--global', '--iops', '200')).code).toBe(0);
    const third = await fio();
    expect(third).toBeGreaterThan(200 * 0.9);
    expect(third).toBeLessThan(200 * 1.1);
    expect((await rb('qos', '--global', '--iops', '0')).code).toBe(0);
    await rb('discard', 'qos');
  }, 60_000);

  it('commit stores the running session as a new point, reusing unchanged chunks', async () => {
    const r = await rbJson<{ result: { id: string; disks: Array<{ newChunks: number; incremental: unknown }> } }>('commit', 'web');
    expect(r.result.disks[0]!.newChunks).toBeLessThanOrEqual(2); // the two chunks the session wrote
    expect(r.result.disks[0]!.incremental).toBeTruthy();
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri(`vm1@${r.result.id}/disk0`), uri('session/web/disk0')]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
  });

  it('migrates to qemu-nbd while writes are in flight, switches over without losing or repeating a request', async () => {
    const targetFile = path.join(dir, 'prod.raw');
    fs.writeFileSync(targetFile, Buffer.alloc(0));
    fs.truncateSync(targetFile, SIZE);
    const target = await qemuNbd(targetFile, path.join(dir, 'prod.sock'));
    // Expected content: the session view now, plus every write below.
    const expected = Buffer.alloc(SIZE);
    const c = await NbdClient.connect(uri('session/web/disk0'));
    await c.read(expected, 0);
    let stop = false;
    let writes = 0;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        // 16 writes in flight at a time, each to its own block.
        await Promise.all(Array.from({ length: 16 }, async (_, j) => {
          const off = ((i * 16 + j) * 7919 * 4096) % SIZE;
          const buf = Buffer.alloc(4096, ((i + j) % 250) + 1);
          await c.write(buf, off);
          buf.copy(expected, off);
          writes++;
        }));
      }
    })();
    const m = await rbJson<{ state: string; result: { switched: Array<{ repaired: number }> } }>('migrate', 'web', '--to', target, '--switch');
    expect(m.state).toBe('succeeded');
    expect(m.result.switched[0]!.repaired).toBe(0);
    stop = true;
    await writer;
    expect(writes).toBeGreaterThan(16);
    // After the switch: more writes go to production storage.
    await c.write(Buffer.alloc(4096, 0x77), 5 * MiB);
    Buffer.alloc(4096, 0x77).copy(expected, 5 * MiB);
    await c.flush();
    await c.close();
    expect(fs.existsSync(path.join(data, 'sessions', 'web', 'overlays', 'disk0'))).toBe(false);
    const got = fs.readFileSync(targetFile);
    expect(got.equals(expected)).toBe(true);
    const fin = await rb('finish', 'web');
    expect(fin.code, fin.stderr).toBe(0);
    // The restore point the session ran from still holds the original image.
    const first = (await daemon.repo.points('vm1'))[0]!;
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri(`vm1@${first.id}/disk0`), path.join(dir, 'src.img')]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
  }, 120_000);

  it('pauses on a full target with a clear message, loses nothing, and finish refuses', async () => {
    await rbJson('recover', 'vm1', '--name', 'full');
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 3M 1M', uri('session/full/disk0')]);
    const mnt = path.join(dir, 'tiny');
    fs.mkdirSync(mnt);
    await runOk('mount', ['-t', 'tmpfs', '-o', 'size=4M', 'tmpfs', mnt]);
    try {
      const r = await rb('migrate', 'full', '--to', path.join(mnt, 't.raw'));
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/no space left on the target/);
      const rep = await rbJson<{ state: string; warnings: string[]; disks: Array<{ migration: { state: string } }> }>('sessions', 'full');
      expect(rep.disks[0]!.migration.state).toBe('paused');
      expect(rep.warnings.join('\n')).toMatch(/paused/);
      const fin = await rb('finish', 'full');
      expect(fin.code).toBe(1);
      expect(fin.stderr).toMatch(/not complete/);
      await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 3M 1M', uri('session/full/disk0')]);
      // Another target works: the overlay stayed authoritative.
      const ok = await rb('migrate', 'full', '--to', path.join(dir, 'full.raw'));
      expect(ok.code, ok.stderr).toBe(0);
      const got = fs.readFileSync(path.join(dir, 'full.raw'));
      expect(got.subarray(3 * MiB, 4 * MiB).every((b) => b === 0x5a)).toBe(true);
      expect(got.subarray(0, MiB).equals(image.subarray(0, MiB))).toBe(true);
    } finally {
      await run('umount', ['-l', mnt]);
    }
    await rb('discard', 'full');
  }, 60_000);
});
