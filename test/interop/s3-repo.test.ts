/**
 * The repository in an S3 bucket, against a real Ceph RGW started by the test (test/helpers/rgw.ts):
 *  - `repo init --s3`, backup, incremental from a QEMU dirty bitmap, restore points exported over
 *    NBD equal to their sources (qemu-img compare), verify, prune, gc, restore, `repo info`;
 *  - a flipped byte in a chunk object: the read fails with EIO (the daemon's log names the chunk)
 *    and verify names the chunk and the point it breaks;
 *  - the radosgw stopped for 10 s while a reader reads: the reads wait and finish with the right
 *    bytes; stopped for good: EIO after s3RetryTime while a local export keeps being served;
 *  - two gateways (two daemons, two data directories, one bucket): concurrent backups, B recovers
 *    A's point, gc on A while B commits (verify clean), a second gc on B refused while A's runs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FixedIndex } from '../../src/repo/format.js';
import type { PointManifest } from '../../src/repo/manifest.js';
import type { VerifyReport } from '../../src/repo/verify.js';
import { cli } from '../helpers/cli.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage } from '../helpers/images.js';
import { closeRgwTestbed, gatewayOk, missingRgwPeers, openRgwTestbed, startGateway as startGatewayOn, stopGateway as stopGatewayOn, type Rgw, type RgwTestbed } from '../helpers/rgw.js';
import { ensureGuest, explainBoot, killAllGuests, missingGuestPeers, newMarker, startGuest } from '../helpers/guest.js';
import os from 'node:os';
import { run, runOk } from '../helpers/run.js';

const MiB = 1024 * 1024;
const BUCKET = 'rebound-s3-test';
const missing = missingRgwPeers('qemu-img', 'qemu-io', 'qemu-nbd');

let bed: RgwTestbed | undefined;
let rgw: Rgw;
let dir: string;
let s3: S3Client;

const startGateway = (data: string, extra: string[] = []): Promise<DaemonProcess> => startGatewayOn(bed!, data, extra);
const stopGateway = (d: DaemonProcess): Promise<void> => stopGatewayOn(bed!, d);

async function rb(d: DaemonProcess, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return cli(['--server', d.url!, '--token-file', d.tokenFile, ...args]);
}

const ok = gatewayOk;

async function backupJson(d: DaemonProcess, args: string[]): Promise<PointManifest> {
  return JSON.parse(await ok(d, ['backup', ...args, '--json'])).result as PointManifest;
}

async function init(data: string, extra: string[] = []): Promise<string> {
  const r = await cli(['--data', data, 'repo', 'init', '--s3', rgw.endpoint, '--bucket', BUCKET, '--prefix', 'site1', ...extra], { env: rgw.env });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

async function compare(nbdUri: string, file: string, fmt = 'raw'): Promise<void> {
  const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', fmt, nbdUri, file]);
  expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
}

async function getObject(key: string): Promise<Buffer> {
  const r = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

async function putObject(key: string, body: Buffer | string): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
}

/**
 * Waits until RGW stamps new objects in a later second than everything written so far. S3's
 * LastModified has one-second resolution and gc keeps every chunk not older than its lease (the
 * same second included: it cannot tell a chunk written just before the lease from one written
 * just after), so a gc that starts in the same second as the backup it should sweep removes none
 * of it. Bounded by count: it is the store's clock that has to move, however fast this machine is.
 */
async function untilStoreSecondPasses(): Promise<void> {
  const probe = 'clock-probe'; // outside the repository's prefix
  const stamp = async (): Promise<number> => {
    await putObject(probe, 'x');
    return (await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: probe }))).LastModified!.getTime();
  };
  const first = await stamp();
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 50));
    if ((await stamp()) > first) return;
  }
  throw new Error("RGW's clock did not move in 100 probes");
}

async function keys(prefix: string): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }));
    for (const o of r.Contents ?? []) out.push(o.Key!);
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** A chunk digest of a point's disk, read from the index object in the bucket. */
async function firstChunk(m: PointManifest, disk: string): Promise<string> {
  const index = FixedIndex.decode(await getObject(`site1/vms/${m.vm}/${m.id}/${disk}.fidx`), 'test');
  for (let i = 0; i < index.count; i++) {
    const d = index.digest(i);
    if (d) return Buffer.from(d).toString('hex');
  }
  throw new Error('no data chunk');
}

beforeAll(async () => {
  if (missing.length) return;
  bed = await openRgwTestbed('rebound-s3-');
  ({ rgw, dir, s3 } = bed);
}, 180_000);

afterAll(() => closeRgwTestbed(bed), 60_000);

describe.skipIf(missing.length > 0)('S3 repository on Ceph RGW', () => {
  const dataA = (): string => path.join(dir, 'gw-a');
  const dataB = (): string => path.join(dir, 'gw-b');
  let a: DaemonProcess;
  let img: string;
  let web: PointManifest;

  it('repo init refuses an archive storage class and a bad bucket name, then creates the repository in the bucket', async () => {
    const glacier = await cli(['--data', path.join(dir, 'x'), 'repo', 'init', '--s3', rgw.endpoint, '--bucket', BUCKET, '--storage-class', 'DEEP_ARCHIVE'], { env: rgw.env });
    expect(glacier.code).not.toBe(0);
    expect(glacier.stderr).toMatch(/DEEP_ARCHIVE is an archive class/);
    const badName = await cli(['--data', path.join(dir, 'x'), 'repo', 'init', '--s3', rgw.endpoint, '--bucket', 'Bad_Bucket'], { env: rgw.env });
    expect(badName.stderr).toMatch(/bucket name 'Bad_Bucket' is not valid/);
    expect(await init(dataA(), ['--chunk-size', '256K'])).toMatch(/created the repository s3:\/\/rebound-s3-test\/site1\//);
    expect(JSON.parse((await getObject('site1/repo.json')).toString())).toMatchObject({ format: 'rebound-repo', chunkSize: 256 * 1024 });
    expect(fs.existsSync(path.join(dataA(), 'repo', 'repo.json'))).toBe(false); // the descriptor is in the bucket
  });

  it('backs up into the bucket; the exported point equals its source; incremental from a dirty bitmap; verify, prune, gc, restore', async () => {
    a = await startGateway(dataA());
    img = path.join(dir, 'web.img');
    makeImage(img, { size: 24 * MiB, data: [[0, 5 * MiB], [12 * MiB + 333, 2 * MiB], [24 * MiB - 4096, 4096]] });
    web = await backupJson(a, ['web1', '--disk', `disk0=${img}`]);
    expect(web.disks[0]!.newChunks).toBeGreaterThan(20);
    const chunkKeys = await keys('site1/chunks/');
    expect(chunkKeys.length).toBe(web.disks[0]!.newChunks);
    // A first backup creates each chunk with one conditional PUT, without a HEAD before it.
    const requests = JSON.parse(await ok(a, ['repo', 'info', '--json'])).s3.requests as { head: number; put: number };
    expect(requests.head).toBeLessThan(5);
    expect(requests.put).toBeGreaterThanOrEqual(web.disks[0]!.newChunks);
    expect(await keys(`site1/vms/web1/${web.id}/`)).toEqual(expect.arrayContaining([`site1/vms/web1/${web.id}/point.json`, `site1/vms/web1/${web.id}/disk0.fidx`]));
    await compare(`nbd://${a.nbd}/web1@${web.id}/disk0`, img);

    // Incremental from a QEMU dirty bitmap (qemu-nbd -B).
    const qcow = path.join(dir, 'app.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', qcow, '32M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 8M', '-c', 'write -P 0x44 20M 4M', qcow]);
    const sock = path.join(dir, 'app.sock');
    const serve = async (extra: string[]): Promise<{ stop: () => Promise<void> }> => {
      const { spawn } = await import('node:child_process');
      const child = spawn('qemu-nbd', ['-k', sock, '-t', '-r', '-f', 'qcow2', '-x', 'vm', ...extra, qcow], { stdio: 'ignore' });
      for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 100));
      return { stop: () => new Promise<void>((r) => (child.once('exit', () => r()), child.kill('SIGTERM'))) };
    };
    let q = await serve([]);
    const full = await backupJson(a, ['app1', '--disk', `disk0=nbd+unix:///vm?socket=${sock}`]);
    await q.stop();
    await runOk('qemu-img', ['bitmap', '--add', qcow, 'cbt']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x55 1M 4k', '-c', 'write -P 0x66 21M 300k', qcow]);
    q = await serve(['-B', 'cbt']);
    let inc: PointManifest;
    try {
      inc = await backupJson(a, ['app1', '--disk', `disk0=nbd+unix:///vm?socket=${sock}`, '--dirty-bitmap', 'cbt']);
    } finally {
      await q.stop();
    }
    expect(inc.disks[0]!.incremental).toEqual({ bitmap: 'cbt', basePoint: full.id, dirtyChunks: 3 });
    expect(inc.disks[0]!.readBytes).toBeLessThanOrEqual(3 * 256 * 1024);
    await compare(`nbd://${a.nbd}/app1@${inc.id}/disk0`, qcow, 'qcow2');

    const info = await ok(a, ['repo', 'info']);
    expect(info).toMatch(/backend: s3 s3:\/\/rebound-s3-test\/site1\//);
    expect(info).toMatch(/disk cache: .* of 64 MiB/);
    expect(info).toMatch(/S3 requests: \d+ GET/);

    const verified = JSON.parse((await rb(a, ['verify', '--json'])).stdout) as VerifyReport;
    expect(verified).toMatchObject({ ok: true, points: 3 });

    // Prune, then gc: the chunks only pruned points used go, the rest stays readable.
    const scratch = path.join(dir, 'scratch.img');
    makeImage(scratch, { size: 4 * MiB, data: [[0, 4 * MiB]], seed: 21 });
    await backupJson(a, ['scratch', '--disk', `disk0=${scratch}`]);
    makeImage(scratch, { size: 4 * MiB, data: [[0, 2 * MiB]], seed: 22 });
    await backupJson(a, ['scratch', '--disk', `disk0=${scratch}`]);
    const before = (await keys('site1/chunks/')).length;
    await ok(a, ['prune', 'app1', '--keep-last', '1']);
    await ok(a, ['prune', 'scratch', '--keep-last', '1']);
    expect(await keys(`site1/vms/app1/${full.id}/`)).toEqual([]);
    await untilStoreSecondPasses();
    const gc = JSON.parse(await ok(a, ['gc', '--json']));
    expect(gc.removedChunks).toBe(16); // the first scratch point's 16 chunks of 256 KiB
    expect((await keys('site1/chunks/')).length).toBe(before - 16);
    expect(JSON.parse((await rb(a, ['verify', '--json'])).stdout)).toMatchObject({ ok: true, points: 3 });
    await compare(`nbd://${a.nbd}/app1@latest/disk0`, qcow, 'qcow2');

    const restored = path.join(dir, 'restored.img');
    await ok(a, ['restore', 'web1@latest', '--disk', 'disk0', '--to', restored]);
    expect(fs.readFileSync(restored).equals(fs.readFileSync(img))).toBe(true);

    // The catalog is an index: rebuilt from the bucket listing when missing.
    await stopGateway(a);
    fs.rmSync(path.join(dataA(), 'catalog'), { recursive: true, force: true });
    a = await startGateway(dataA());
    expect(JSON.parse(await ok(a, ['list', '--json'])).vms.map((v: { vm: string }) => v.vm).sort()).toEqual(['app1', 'scratch', 'web1']);
    expect(await ok(a, ['repo', 'reindex'])).toMatch(/3 restore point/);
  }, 300_000);

  it('a flipped byte in a chunk object: the read gets EIO naming the chunk in the log, verify names the chunk and its point', async () => {
    const hex = await firstChunk(web, 'disk0');
    const key = `site1/chunks/${hex.slice(0, 2)}/${hex}`;
    const good = await getObject(key);
    const bad = Buffer.from(good);
    bad[bad.length - 7]! ^= 0x40;
    await putObject(key, bad);
    try {
      // Nothing cached: a fresh daemon with an empty disk cache.
      await stopGateway(a);
      fs.rmSync(path.join(dataA(), 'cache'), { recursive: true, force: true });
      a = await startGateway(dataA());
      const read = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 1M', `nbd://${a.nbd}/web1@${web.id}/disk0`]);
      expect(read.stdout + read.stderr).toMatch(/Input\/output error/);
      await new Promise((r) => setTimeout(r, 200));
      expect(a.stdout() + a.stderr()).toContain(hex);
      const r = await rb(a, ['verify', '--json']);
      expect(r.code).not.toBe(0);
      const report = JSON.parse(r.stdout) as VerifyReport;
      expect(report.ok).toBe(false);
      expect(report.problems).toEqual([expect.objectContaining({ chunk: hex, error: 'corrupt', affected: [expect.objectContaining({ vm: 'web1', point: web.id, disk: 'disk0' })] })]);
    } finally {
      await putObject(key, good);
    }
    expect(JSON.parse((await rb(a, ['verify', '--json'])).stdout)).toMatchObject({ ok: true });
  }, 120_000);

  it('radosgw stopped for 10 s while a reader reads: the reads wait and finish right; stopped for good: EIO after the limit, local exports keep serving', async () => {
    const local = path.join(dir, 'local.img');
    makeImage(local, { size: 8 * MiB, data: [[0, 8 * MiB]], seed: 7 });
    await stopGateway(a);
    fs.rmSync(path.join(dataA(), 'cache'), { recursive: true, force: true });
    a = await startGateway(dataA(), ['--s3-retry-time', '25', '--export', `local=${local}`]);

    await rgw.stopGateway();
    const started = Date.now();
    const reading = run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `nbd://${a.nbd}/web1@${web.id}/disk0`, img]);
    await new Promise((r) => setTimeout(r, 10_000));
    await rgw.startGateway();
    const cmp = await reading;
    expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
    expect(Date.now() - started).toBeGreaterThanOrEqual(10_000); // it did wait for the endpoint
    expect(JSON.parse(await ok(a, ['repo', 'info', '--json'])).s3.requests.retries).toBeGreaterThan(0);

    // For good: after s3RetryTime (25 s) the read fails with EIO; the local export is still served.
    await stopGateway(a);
    fs.rmSync(path.join(dataA(), 'cache'), { recursive: true, force: true });
    a = await startGateway(dataA(), ['--s3-retry-time', '6', '--export', `local=${local}`]);
    await rgw.stopGateway();
    try {
      const read = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 256k', `nbd://${a.nbd}/web1@${web.id}/disk0`]);
      expect(read.stdout + read.stderr).toMatch(/Input\/output error/);
      await compare(`nbd://${a.nbd}/local`, local);
      expect(a.stdout() + a.stderr()).toMatch(/the object store kept failing for 6 s/);
    } finally {
      await rgw.startGateway();
    }

    // A backup that loses the endpoint half-way fails and leaves no point.
    const big = path.join(dir, 'lost.img');
    makeImage(big, { size: 48 * MiB, data: [[0, 48 * MiB]], seed: 31 });
    const before = (await keys('site1/chunks/')).length;
    const lost = rb(a, ['backup', 'lost1', '--disk', `disk0=${big}`]);
    for (let i = 0; i < 2000 && (await keys('site1/chunks/')).length < before + 3; i++) await new Promise((r) => setTimeout(r, 20));
    await rgw.stopGateway();
    const failed = await lost;
    await rgw.startGateway();
    expect(failed.code).not.toBe(0);
    expect(failed.stderr).toMatch(/kept failing for 6 s/);
    expect((await keys('site1/chunks/')).length).toBeGreaterThan(before); // it had uploaded chunks
    expect((await keys('site1/vms/lost1/')).filter((k) => k.endsWith('/point.json'))).toEqual([]);
    expect((await rb(a, ['show', 'lost1'])).stderr).toMatch(/no backups of VM 'lost1'/);
  }, 180_000);

  it.skipIf(missingGuestPeers().length > 0)('the guest boots from a session whose point is only in the bucket (disk cache emptied) while radosgw is down for 10 s; its access map is kept and prefetched at the next recovery', async () => {
    const guest = await ensureGuest();
    const sources = ['--source-dir', os.tmpdir(), '--source-dir', path.dirname(guest.disk)];
    await stopGateway(a);
    a = await startGateway(dataA(), sources);
    const m = await backupJson(a, ['guest', '--disk', `disk0=${guest.disk}`]);
    await stopGateway(a);
    fs.rmSync(path.join(dataA(), 'cache'), { recursive: true, force: true });
    a = await startGateway(dataA(), [...sources, '--s3-retry-time', '60']);
    const rec = JSON.parse(await ok(a, ['recover', `guest@${m.id}`, '--name', 'vm', '--json'])) as { disks: Array<{ nbdUri: string }> };
    // Every read of the guest's disk must wait for the endpoint, then go on.
    await rgw.stopGateway();
    const marker = newMarker('s3');
    // no_timer_check: under a heavily loaded TCG the kernel's IO-APIC timer check can fail (a panic
    // that has nothing to do with the disk).
    const vm = await startGuest({ drive: rec.disks[0]!.nbdUri, action: `write:${marker}+check`, timeoutMs: 240_000, guest, append: 'no_timer_check' });
    await new Promise((r) => setTimeout(r, 10_000));
    await rgw.startGateway();
    const r = await vm.done;
    const why = `${explainBoot(r)}\n--- daemon stderr ---\n${a.stderr()}`;
    expect(r.timedOut, why).toBe(false);
    expect(r.ioErrors, why).toEqual([]);
    expect(r.status, why).toBe('ok');
    expect(r.fields, why).toMatchObject({ marker, base: 'ok' });
    const info = JSON.parse(await ok(a, ['repo', 'info', '--json']));
    expect(info.s3.requests.retries).toBeGreaterThan(0);
    expect(info.diskCache.chunks).toBeGreaterThan(0);

    // Discarding the session closes the image: its access map goes into the bucket.
    await ok(a, ['discard', 'vm']);
    const mapKey = `site1/vms/guest/${m.id}/access/disk0.map`;
    let map: Buffer | undefined;
    for (let i = 0; i < 100 && !map; i++) {
      map = await getObject(mapKey).catch(() => undefined);
      if (!map) await new Promise((res) => setTimeout(res, 100));
    }
    expect(map?.subarray(0, 8).toString()).toBe('RBAMAP01');
    const mapped = map!.readUInt32BE(12);
    expect(mapped).toBeGreaterThan(0);

    // Next recovery, cold cache: the mapped chunks are fetched before anyone reads them.
    await stopGateway(a);
    fs.rmSync(path.join(dataA(), 'cache'), { recursive: true, force: true });
    a = await startGateway(dataA(), sources);
    await ok(a, ['recover', `guest@${m.id}`, '--name', 'vm2', '--json']);
    let cached = 0;
    for (let i = 0; i < 600 && cached < mapped; i++) {
      cached = JSON.parse(await ok(a, ['repo', 'info', '--json'])).diskCache.chunks;
      if (cached < mapped) await new Promise((res) => setTimeout(res, 100));
    }
    expect(cached).toBeGreaterThanOrEqual(mapped);
    await ok(a, ['discard', 'vm2']);
    killAllGuests();
  }, 400_000);

  it('two gateways on one bucket: concurrent backups, B recovers A\'s point, gc on A while B commits loses nothing, a second gc is refused', async () => {
    expect(await init(dataB())).toMatch(/joined the existing repository s3:\/\/rebound-s3-test\/site1\//);
    await stopGateway(a);
    a = await startGateway(dataA());
    const b = await startGateway(dataB());
    const imgA = path.join(dir, 'a.img');
    const imgB = path.join(dir, 'b.img');
    makeImage(imgA, { size: 16 * MiB, data: [[0, 10 * MiB]], seed: 11 });
    makeImage(imgB, { size: 16 * MiB, data: [[2 * MiB, 10 * MiB]], seed: 12 });
    const [pa, pb] = await Promise.all([backupJson(a, ['vm-a', '--disk', `disk0=${imgA}`]), backupJson(b, ['vm-b', '--disk', `disk0=${imgB}`])]);
    // B recovers A's point once its catalog has read the bucket again.
    expect(await ok(b, ['show', `vm-a@${pa.id}`])).toContain(`vm-a@${pa.id}/disk0`); // looked up in the bucket
    expect(await ok(b, ['repo', 'reindex'])).toMatch(/6 restore point/);
    await compare(`nbd://${b.nbd}/vm-a@${pa.id}/disk0`, imgA);
    await compare(`nbd://${a.nbd}/vm-a@${pa.id}/disk0`, imgA);

    // Garbage for gc: vm-b's point goes.
    makeImage(imgB, { size: 16 * MiB, data: [[0, 12 * MiB]], seed: 13 });
    const pb2 = await backupJson(b, ['vm-b', '--disk', `disk0=${imgB}`]);
    await ok(b, ['prune', 'vm-b', '--keep-last', '1']);
    expect(pb2.id).not.toBe(pb.id);

    // gc on A while B commits a new point.
    const imgC = path.join(dir, 'c.img');
    makeImage(imgC, { size: 32 * MiB, data: [[0, 30 * MiB]], seed: 14 });
    await untilStoreSecondPasses();
    const [gcOut, pc] = await Promise.all([ok(a, ['gc', '--json']), backupJson(b, ['vm-c', '--disk', `disk0=${imgC}`])]);
    expect(JSON.parse(gcOut).removedChunks).toBeGreaterThan(0);
    await ok(a, ['repo', 'reindex']);
    expect(JSON.parse((await rb(a, ['verify', '--json'])).stdout)).toMatchObject({ ok: true, points: 7 });
    await compare(`nbd://${a.nbd}/vm-c@${pc.id}/disk0`, imgC);

    // A second gc while A's runs: A's gc is held in its sweep phase by a running backup (another
    // gateway's marker, written here), and B's gc is refused with the holder named.
    const marker = 'site1/locks/backups/gateway-x-test.json';
    await putObject(marker, JSON.stringify({ gateway: 'gateway-x', pid: 1, purpose: 'backup', phase: 'running', acquiredAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 600_000).toISOString() }));
    const gcA = rb(a, ['gc', '--json']);
    for (let i = 0; i < 600; i++) {
      const lease = await getObject('site1/locks/maintenance.json').then((x) => JSON.parse(x.toString()), () => undefined);
      if (lease?.phase === 'sweep') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const refused = await rb(b, ['gc']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/gc refused: gateway \S+ is running gc on this repository/);
    const pruneRefused = await rb(b, ['prune', 'vm-b', '--keep-last', '1']);
    expect(pruneRefused.stderr).toMatch(/prune refused: gateway \S+ is running gc/);
    await s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: marker }));
    const done = await gcA;
    expect(done.code, done.stderr).toBe(0);
    expect(await keys('site1/locks/')).toEqual([]);
    expect(JSON.parse((await rb(b, ['verify', '--json'])).stdout)).toMatchObject({ ok: true });
  }, 300_000);
});
