#!/usr/bin/env node
/**
 * S3 repository benchmark against a one-node Ceph RGW started here (tools/bench/rgw.mjs), in one run:
 *
 *   node tools/bench/s3.mjs [--size 512M] [--rtt 20] [--rounds N] [--skip-boot] [--layout-mib N] [--json] [--check]
 *
 *   1. object layout: raw PUT/GET/DELETE throughput and request counts for 1 MiB objects (one
 *      chunk per object) against 16 MiB objects (a pack of 16 chunks), through the same SDK
 *      client and concurrency (docs/repository-format.md has the decision and the figures);
 *   2. backup and full restore of a --size VM-like image (lib.mjs writeVmImage) into/out of the
 *      bucket: rebound (`repo init --s3`, `backup`, `restore`) against restic 0.14 with its S3
 *      backend (`restic -r s3:http://...`, `backup`, `restore`), same RGW, same image; rebound's
 *      S3 request counts and gc of the pruned point; the same with an encrypted repository
 *      (`repo keygen`, `repo init --encrypt`: AES-256-GCM, keyed chunk names), since restic
 *      encrypts too; --rounds N repeats the three interleaved and reports medians;
 *   3. guest boot (tools/guest: kernel + initramfs + ext4 disk, QEMU TCG, mount, unmount, power
 *      off) from a recovery session: from a local repository, and from the bucket through a
 *      delaying TCP proxy (--rtt ms round trip; this kernel has no netem) with a cold disk cache
 *      and no access map, then warm (cache emptied again, the access map of the cold boot
 *      prefetched).
 * Targets (issue 16): backup and restore >= 1.0x restic; warm boot <= 1.5x local, cold <= 3x local.
 * Everything (RGW, daemons, proxy, temp dir) is removed on exit, on error and on Ctrl-C.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { api, bootGuestOnce, cpuSeconds, fmt, killAllSync, log, MiB, pathFlags, REBOUND_MAIN, removeTmpSync, rebound, ROOT, run, setTmpDir, sleep, startServer, stopServer, table, which, writeVmImage, useDaemonToken } from './lib.mjs';
import { startRgw } from './rgw.mjs';

const TARGETS = { backupVsRestic: 1.0, restoreVsRestic: 1.0, warmVsLocal: 1.5, coldVsLocal: 3 };
const USAGE = `usage: node tools/bench/s3.mjs [options]
  --size SIZE   image size for backup/restore (default 512M)
  --rtt MS      added round trip on the RGW path for the boots (default 20)
  --layout-mib N   MiB written per object size in the layout measurement (default 256; 0 skips it)
  --rounds N    backup/restore rounds (rebound, rebound encrypted, restic, interleaved; medians reported; default 1)
  --skip-boot   skip the guest boots (3.)
  --json        print JSON
  --check       exit 1 when a target is missed
  -h, --help`;

/** A TCP proxy on 127.0.0.1 that delays every piece of data by `oneWayMs` in each direction. */
function startDelayProxy(targetPort, oneWayMs) {
  const sockets = new Set();
  const pipe = (from, to) => {
    from.on('data', (d) => setTimeout(() => to.writable && to.write(d), oneWayMs));
    from.on('end', () => setTimeout(() => to.end(), oneWayMs));
    from.on('error', () => to.destroy());
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    sockets.add(client).add(upstream);
    client.on('close', () => sockets.delete(client));
    upstream.on('close', () => sockets.delete(upstream));
    pipe(client, upstream);
    pipe(upstream, client);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: server.address().port,
        close: () => {
          for (const s of sockets) s.destroy();
          server.close();
        },
      }),
    ),
  );
}

/** Raw object throughput of one object size: PUT, GET, DELETE of `totalMiB` in objects of `objMiB`. */
async function layoutRun(s3, bucket, objMiB, totalMiB, concurrency) {
  const { PutObjectCommand, GetObjectCommand, DeleteObjectCommand } = await import('@aws-sdk/client-s3');
  const n = Math.max(1, Math.round(totalMiB / objMiB));
  const body = Buffer.alloc(objMiB * MiB);
  for (let i = 0; i < body.length; i += 4) body.writeUInt32LE((i * 2654435761) >>> 0, i);
  const keys = Array.from({ length: n }, (_, i) => `layout/${objMiB}m/${i}`);
  const phase = async (fn) => {
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < keys.length) await fn(keys[next++]);
    }));
    return (performance.now() - t0) / 1000;
  };
  const put = await phase((Key) => s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body: body })));
  const get = await phase(async (Key) => {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key }));
    await r.Body.transformToByteArray();
  });
  const del = await phase((Key) => s3.send(new DeleteObjectCommand({ Bucket: bucket, Key })));
  return { objMiB, concurrency, objects: n, putMiBs: (n * objMiB) / put, getMiBs: (n * objMiB) / get, deleteSeconds: del, requestsPerGiB: 1024 / objMiB };
}

/** CPU seconds of the Ceph daemons (radosgw, ceph-osd, ceph-mon): how busy the endpoint was. */
function cephCpu() {
  let sum = 0;
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (/^(radosgw|ceph-osd|ceph-mon)$/.test(fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim())) sum += cpuSeconds(pid) || 0;
    } catch {
      // gone meanwhile
    }
  }
  return sum;
}
const cpuNow = (pid) => ({ rebound: cpuSeconds(pid), ceph: cephCpu() });
const cpuSince = (c, pid) => ({ rebound: cpuSeconds(pid) - c.rebound, ceph: cephCpu() - c.ceph });

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '512M' },
      rtt: { type: 'string', default: '20' },
      'layout-mib': { type: 'string', default: '256' },
      rounds: { type: 'string', default: '1' },
      'skip-boot': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return void console.log(USAGE);
  if (!fs.existsSync(REBOUND_MAIN)) throw new Error(`${REBOUND_MAIN} is missing: run 'npm run build' first`);
  for (const t of ['restic', 'radosgw', 'qemu-system-x86_64', 'qemu-img']) if (!which(t)) throw new Error(`${t} is not installed (tools/setup.sh)`);
  const { parseSize } = await import(path.join(ROOT, 'dist/util/size.js'));
  const size = parseSize(values.size);
  const rtt = Number(values.rtt);
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-bench-s3-'));
  setTmpDir(tmpDir);
  const R = { size, rttMs: rtt, loadavg: os.loadavg(), cpus: os.cpus().length };
  log('starting a one-node Ceph RGW');
  const rgw = await startRgw();
  activeRgw = rgw;
  Object.assign(process.env, rgw.env);
  const servers = [];
  let proxy;
  let rounds;
  const serve = async (data, extra = []) => {
    const sock = path.join(tmpDir, `${path.basename(data)}.sock`);
    const s = await startServer({
      name: `rebound-${path.basename(data)}`, cmd: process.execPath,
      args: [REBOUND_MAIN, 'serve', '--data', data, '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', ...pathFlags(), '--source-dir', path.join(ROOT, 'test-results/guest'), ...extra],
      sock, uri: `nbd+unix:///?socket=${sock}`, dir: tmpDir, timeoutMs: 60_000,
      ready: (_s, text) => /HTTP API: (http:\/\/[^/\s]+)\//.exec(text)?.[1],
    });
    useDaemonToken(data);
    servers.push(s);
    return { http: s.ready, sock, server: s };
  };
  const stop = async (d) => {
    await stopServer(d.server);
    servers.splice(servers.indexOf(d.server), 1);
  };
  try {
    const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
    const s3 = new S3Client({ endpoint: rgw.endpoint, forcePathStyle: true, region: 'us-east-1' });

    // ---- 1. object layout ------------------------------------------------------------------
    await s3.send(new CreateBucketCommand({ Bucket: 'layout' }));
    const totalMiB = Number(values['layout-mib']);
    R.layout = [];
    if (totalMiB > 0) for (const [objMiB, conc] of [[1, 8], [16, 8], [1, 32], [1, 8], [16, 8], [1, 32]]) R.layout.push(await layoutRun(s3, 'layout', objMiB, totalMiB, conc));
    log(`layout: ${R.layout.map((l) => `${l.objMiB} MiB objects x${l.concurrency} PUT ${fmt(l.putMiBs)} GET ${fmt(l.getMiBs)} MiB/s`).join('; ')}`);

    // ---- 2. backup and restore: rebound vs restic -------------------------------------------
    const img = path.join(tmpDir, 'vm.raw');
    log(`writing a ${fmt(size / MiB)} MiB VM-like image`);
    writeVmImage(img, size);
    // Each round: rebound, rebound with an encrypted repository (repo init --encrypt), restic
    // (which encrypts too), each into a fresh bucket, interleaved so that load changes hit all three.
    const restic = { RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: path.join(tmpDir, 'restic-cache') };
    Object.assign(process.env, restic);
    R.rounds = [];
    let d;
    const reboundRun = async (round, encrypted) => {
      const tag = `${encrypted ? 'enc' : 'plain'}-${round}`;
      const data = path.join(tmpDir, `s3-${tag}`);
      const extra = [];
      if (encrypted) {
        const key = path.join(tmpDir, `key-${tag}`);
        await run(process.execPath, [REBOUND_MAIN, 'repo', 'keygen', key], { timeoutMs: 30_000 });
        extra.push('--encrypt', key);
      }
      await run(process.execPath, [REBOUND_MAIN, '--data', data, 'repo', 'init', '--s3', rgw.endpoint, '--bucket', `bench-rebound-${tag}`, ...extra], { timeoutMs: 60_000 });
      const daemon = await serve(data);
      const out = {};
      let cpu = cpuNow(daemon.server.pid);
      let t = performance.now();
      const bk = await rebound(daemon.http, ['backup', 'vm', '--disk', `disk0=${img}`]);
      out.backupMiBs = size / MiB / ((performance.now() - t) / 1000);
      out.backupCpu = cpuSince(cpu, daemon.server.pid);
      out.storedBytes = bk.result.disks[0].newBytes;
      const restoreTo = path.join(tmpDir, 'restored.raw');
      // (a backup does not fill the disk cache: the restore reads every chunk from the bucket)
      cpu = cpuNow(daemon.server.pid);
      t = performance.now();
      await rebound(daemon.http, ['restore', 'vm', '--disk', 'disk0', '--to', restoreTo]);
      out.restoreMiBs = size / MiB / ((performance.now() - t) / 1000);
      out.restoreCpu = cpuSince(cpu, daemon.server.pid);
      if (!fs.readFileSync(restoreTo).equals(fs.readFileSync(img))) throw new Error(`rebound restore (${tag}) differs from the image`);
      fs.rmSync(restoreTo);
      out.requests = (await api(daemon.http, 'GET', '/v1/repo')).s3.requests;
      log(`rebound${encrypted ? ' encrypted' : ''} (round ${round}): backup ${fmt(out.backupMiBs)} MiB/s, restore ${fmt(out.restoreMiBs)} MiB/s (load ${os.loadavg()[0].toFixed(1)}); CPU s backup rebound ${fmt(out.backupCpu.rebound, 2)} / Ceph ${fmt(out.backupCpu.ceph, 2)}, restore ${fmt(out.restoreCpu.rebound, 2)} / ${fmt(out.restoreCpu.ceph, 2)}`);
      return { out, daemon, data };
    };
    const resticRun = async (round) => {
      const repoUrl = `s3:${rgw.endpoint}/bench-restic-${round}`;
      await run('restic', ['-r', repoUrl, 'init'], { timeoutMs: 120_000 });
      let t = performance.now();
      await run('restic', ['-r', repoUrl, 'backup', '--quiet', img], { timeoutMs: 3_600_000 });
      const out = { backupMiBs: size / MiB / ((performance.now() - t) / 1000), version: (await run('restic', ['version'], { timeoutMs: 30_000 })).stdout.trim().split(' ').slice(0, 2).join(' ') };
      const target = path.join(tmpDir, 'restic-restore');
      t = performance.now();
      await run('restic', ['-r', repoUrl, 'restore', 'latest', '--target', target], { timeoutMs: 3_600_000 });
      out.restoreMiBs = size / MiB / ((performance.now() - t) / 1000);
      const restored = path.join(target, img);
      if (!fs.readFileSync(restored).equals(fs.readFileSync(img))) throw new Error('restic restore differs from the image');
      fs.rmSync(target, { recursive: true, force: true });
      log(`restic (round ${round}): backup ${fmt(out.backupMiBs)} MiB/s, restore ${fmt(out.restoreMiBs)} MiB/s (load ${os.loadavg()[0].toFixed(1)})`);
      return out;
    };
    rounds = Number(values.rounds);
    for (let round = 1; round <= rounds; round++) {
      const load = os.loadavg();
      const plain = await reboundRun(round, false);
      const enc = await reboundRun(round, true);
      await stop(enc.daemon);
      const rs = await resticRun(round);
      R.rounds.push({ round, loadavg: load, rebound: plain.out, encrypted: enc.out, restic: rs });
      if (round < rounds) await stop(plain.daemon);
      else {
        d = plain.daemon;
        useDaemonToken(plain.data); // the CLI talks to this daemon again (gc, boots)
      }
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
    const med = (who, what) => median(R.rounds.map((r) => r[who][what]));
    R.rebound = { backupMiBs: med('rebound', 'backupMiBs'), restoreMiBs: med('rebound', 'restoreMiBs'), requests: R.rounds.at(-1).rebound.requests, storedBytes: R.rounds.at(-1).rebound.storedBytes };
    R.encrypted = { backupMiBs: med('encrypted', 'backupMiBs'), restoreMiBs: med('encrypted', 'restoreMiBs'), storedBytes: R.rounds.at(-1).encrypted.storedBytes };
    R.restic = { backupMiBs: med('restic', 'backupMiBs'), restoreMiBs: med('restic', 'restoreMiBs'), version: R.rounds[0].restic.version };

    // gc cost: prune the point (one more backup of a changed image first, so the repo keeps one).
    const fd = fs.openSync(img, 'r+');
    fs.writeSync(fd, Buffer.alloc(size / 4, 0x5c), 0, size / 4, 0);
    fs.closeSync(fd);
    await rebound(d.http, ['backup', 'vm', '--disk', `disk0=${img}`]);
    await rebound(d.http, ['prune', 'vm', '--keep-last', '1']);
    const t0 = performance.now();
    const gc = await rebound(d.http, ['gc']);
    R.rebound.gc = { seconds: (performance.now() - t0) / 1000, scanned: gc.scannedChunks, removed: gc.removedChunks };
    log(`gc: ${R.rebound.gc.removed} of ${R.rebound.gc.scanned} chunks removed in ${fmt(R.rebound.gc.seconds, 1)} s`);

    // ---- 3. guest boot: local, S3 cold, S3 warm --------------------------------------------
    if (values['skip-boot']) await stop(d);
    else {
      const guestDir = path.join(ROOT, 'test-results/guest');
      await run('bash', [path.join(ROOT, 'tools/guest/build.sh'), guestDir], { timeoutMs: 600_000 });
      await rebound(d.http, ['backup', 'guest', '--disk', `disk0=${path.join(guestDir, 'disk.img')}`]);
      await stop(d);
      const local = await serve(path.join(tmpDir, 'local'));
      await rebound(local.http, ['backup', 'guest', '--disk', `disk0=${path.join(guestDir, 'disk.img')}`]);
      await stop(local);
      const localRestart = await serve(path.join(tmpDir, 'local'));
      await api(localRestart.http, 'POST', '/v1/sessions', { vm: 'guest', name: 'boot' });
      R.boot = { localMs: await bootGuestOnce(guestDir, `nbd+unix:///session/boot/disk0?socket=${localRestart.sock}`) };
      await stop(localRestart);
      log(`boot from the local repository: ${fmt(R.boot.localMs / 1000, 1)} s`);

      proxy = await startDelayProxy(rgw.port, rtt / 2);
      const dataP = path.join(tmpDir, 'via-proxy');
      await run(process.execPath, [REBOUND_MAIN, '--data', dataP, 'repo', 'init', '--s3', `http://127.0.0.1:${proxy.port}`, '--bucket', `bench-rebound-plain-${rounds}`], { timeoutMs: 60_000 });
      d = await serve(dataP);
      await api(d.http, 'POST', '/v1/sessions', { vm: 'guest', name: 'cold' });
      R.boot.coldMs = await bootGuestOnce(guestDir, `nbd+unix:///session/cold/disk0?socket=${d.sock}`);
      R.boot.coldRequests = (await api(d.http, 'GET', '/v1/repo')).s3.requests;
      await api(d.http, 'DELETE', '/v1/sessions/cold');
      await stop(d);
      log(`cold boot from the bucket (+${rtt} ms RTT): ${fmt(R.boot.coldMs / 1000, 1)} s`);
      fs.rmSync(path.join(dataP, 'cache'), { recursive: true, force: true });
      d = await serve(dataP);
      await api(d.http, 'POST', '/v1/sessions', { vm: 'guest', name: 'warm' });
      R.boot.warmMs = await bootGuestOnce(guestDir, `nbd+unix:///session/warm/disk0?socket=${d.sock}`);
      const info = await api(d.http, 'GET', '/v1/repo');
      R.boot.warmDiskCache = info.diskCache;
      await api(d.http, 'DELETE', '/v1/sessions/warm');
      await stop(d);
      log(`warm boot (access map prefetched): ${fmt(R.boot.warmMs / 1000, 1)} s`);
    }
    s3.destroy();
  } finally {
    for (const s of [...servers]) await stopServer(s).catch(() => undefined);
    proxy?.close();
    await rgw.stop();
  }

  R.ratios = {
    backupVsRestic: R.rebound.backupMiBs / R.restic.backupMiBs,
    restoreVsRestic: R.rebound.restoreMiBs / R.restic.restoreMiBs,
    encryptedBackupVsRestic: R.encrypted.backupMiBs / R.restic.backupMiBs,
    encryptedRestoreVsRestic: R.encrypted.restoreMiBs / R.restic.restoreMiBs,
    encryptedBackupVsPlain: R.encrypted.backupMiBs / R.rebound.backupMiBs,
    encryptedRestoreVsPlain: R.encrypted.restoreMiBs / R.rebound.restoreMiBs,
    ...(R.boot ? { warmVsLocal: R.boot.warmMs / R.boot.localMs, coldVsLocal: R.boot.coldMs / R.boot.localMs } : {}),
  };
  const misses = [];
  if (R.ratios.backupVsRestic < TARGETS.backupVsRestic) misses.push('backup vs restic');
  if (R.ratios.restoreVsRestic < TARGETS.restoreVsRestic) misses.push('restore vs restic');
  if (R.boot && R.ratios.warmVsLocal > TARGETS.warmVsLocal) misses.push('warm boot vs local');
  if (R.boot && R.ratios.coldVsLocal > TARGETS.coldVsLocal) misses.push('cold boot vs local');
  R.loadavgEnd = os.loadavg();
  if (values.json) console.log(JSON.stringify(R, null, 2));
  else {
    console.log(`\nS3 repository on Ceph RGW (loadavg at start ${R.loadavg.map((x) => x.toFixed(2)).join(' ')}, end ${R.loadavgEnd.map((x) => x.toFixed(2)).join(' ')}; ${R.cpus} CPUs)`);
    console.log('\nobject layout (SDK; each size twice, interleaved):');
    console.log(table([['object', 'in flight', 'PUT MiB/s', 'GET MiB/s', 'DELETE s', 'requests/GiB'], ...R.layout.map((l) => [`${l.objMiB} MiB`, String(l.concurrency), fmt(l.putMiBs), fmt(l.getMiBs), fmt(l.deleteSeconds, 2), String(l.requestsPerGiB)])]));
    console.log(`\nbackup and restore of a ${fmt(size / MiB)} MiB VM-like image:`);
    console.log(`(${R.rounds.length} round(s), medians; rebound encrypted: repo init --encrypt, AES-256-GCM + HMAC chunk names; restic encrypts too)`);
    console.log(
      table([
        ['', 'rebound', 'rebound encrypted', R.restic.version, 'rebound / restic', 'encrypted / restic', 'encrypted / rebound'],
        ['backup MiB/s', fmt(R.rebound.backupMiBs), fmt(R.encrypted.backupMiBs), fmt(R.restic.backupMiBs), fmt(R.ratios.backupVsRestic, 2), fmt(R.ratios.encryptedBackupVsRestic, 2), fmt(R.ratios.encryptedBackupVsPlain, 2)],
        ['restore MiB/s', fmt(R.rebound.restoreMiBs), fmt(R.encrypted.restoreMiBs), fmt(R.restic.restoreMiBs), fmt(R.ratios.restoreVsRestic, 2), fmt(R.ratios.encryptedRestoreVsRestic, 2), fmt(R.ratios.encryptedRestoreVsPlain, 2)],
      ]),
    );
    if (R.rounds.length > 1) {
      console.log('every round (load average at its start):');
      console.log(table([['round', 'load', 'rebound b/r', 'encrypted b/r', 'restic b/r'], ...R.rounds.map((r) => [String(r.round), r.loadavg[0].toFixed(1), `${fmt(r.rebound.backupMiBs)} / ${fmt(r.rebound.restoreMiBs)}`, `${fmt(r.encrypted.backupMiBs)} / ${fmt(r.encrypted.restoreMiBs)}`, `${fmt(r.restic.backupMiBs)} / ${fmt(r.restic.restoreMiBs)}`])]));
    }
    const q = R.rebound.requests;
    console.log(`rebound requests for backup + restore: ${q.put} PUT, ${q.head} HEAD, ${q.get} GET, ${q.list} LIST; gc after prune: ${R.rebound.gc.removed}/${R.rebound.gc.scanned} chunks in ${fmt(R.rebound.gc.seconds, 1)} s`);
    if (R.boot) console.log(`\nguest boot to power-off (QEMU TCG), +${rtt} ms RTT on the S3 path:`);
    if (R.boot) console.log(table([['', 'seconds', 'x local'], ['local repository', fmt(R.boot.localMs / 1000, 1), '1.00'], ['S3 cold', fmt(R.boot.coldMs / 1000, 1), fmt(R.ratios.coldVsLocal, 2)], ['S3 warm (access map)', fmt(R.boot.warmMs / 1000, 1), fmt(R.ratios.warmVsLocal, 2)]]));
    console.log(misses.length ? `\ntargets missed: ${misses.join(', ')}` : '\nall targets met');
  }
  removeTmpSync();
  if (values.check && misses.length) process.exitCode = 1;
}

/** The RGW of this run: its daemons fork into the background, so they are stopped by pid. */
let activeRgw;
process.on('SIGINT', async () => {
  killAllSync();
  await activeRgw?.stop().catch(() => undefined);
  removeTmpSync();
  process.exit(130);
});
main().catch(async (err) => {
  console.error(err);
  killAllSync();
  await activeRgw?.stop().catch(() => undefined);
  removeTmpSync();
  process.exit(1);
});
