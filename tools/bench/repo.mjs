#!/usr/bin/env node
/**
 * Backup repository benchmark: ingest, dedup, incremental backups, full restore and random reads
 * of restore points, and a sweep over the repository's chunk size. One run:
 *
 *   node tools/bench/repo.mjs [--size 2G] [--chunk-sizes 64K,256K,1M,4M] [--runtime 10] [--json] [--check]
 *   node tools/bench/repo.mjs --quick          # 256 MiB image, 3 s fio jobs: about a minute
 *
 * Data: a sparse raw image laid out like a used VM disk (lib.mjs writeVmImage: ~20 % never
 * written, text, binary records, incompressible data and some duplicated extents), and a copy of
 * it with 2 % of its 4 KiB blocks rewritten at random (scattered). For every chunk size, in a
 * fresh repository (DATA/config.json {chunkSize, cacheSize}) behind a fresh daemon:
 *   1. backup of the raw image             -> ingest MiB/s, stored bytes
 *   2. backup of the changed image         -> time, stored bytes (dedup ratio), repository size
 *   3. the point's export, cold chunk cache (daemon restarted): nbdcopy of the whole disk (which
 *      leaves every chunk in the cache), then
 *   4. warm chunk cache: fio 4 KiB random reads at queue depth 32, and after another restart,
 *      cold: fio 4 KiB random reads at queue depth 1 (latency)
 * and for the main chunk size (--chunk-size, default 1M, the repository default) also
 *   5. the same 2 % change as a dirty-bitmap incremental: the base image converted to qcow2,
 *      full backup from `qemu-nbd -r -f qcow2`, `qemu-img bitmap --add`, the writes through
 *      qemu-io, `qemu-nbd -B`, `rebound backup --dirty-bitmap` -> bytes read vs dirty chunks
 *   6. full restore to a file against `qemu-img convert -O raw` of the raw image (best of 3 each),
 *      and the same backups and restore with restic and a local repository (when restic is installed)
 *   7. random reads against `nbdkit -r file` of the changed raw image: cold and warm, queue
 *      depth 32 and 1, and warm with a small (--small-cache) chunk cache.
 * The page cache is warm for every server alike (the image and the repository's chunk files were
 * just written); "cold" means rebound's own chunk cache is empty.
 *
 * Targets (issue): restore >= 0.9x qemu-img convert; backup and restore >= 2x restic; warm 4 KiB random read >= 0.7x nbdkit; the
 * bitmap incremental reads only the dirty chunks.
 * Everything (servers, temp dir) is cleaned up on success, failure and Ctrl-C; every step has a
 * time limit. Unix sockets only, except the daemon's HTTP API on 127.0.0.1:0.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  cpuSeconds, dirUsage, firstLine, fmt, GiB, killAllSync, log, makeRng, measureFio, measureNbdcopy, MiB, REBOUND_MAIN,
  pathFlags, removeTmpSync, ROOT, run, setTmpDir, settleBeforeTimedCopy, startServer, stopServer, table, VM_IMAGE_MIX, waitNbd, warmPageCache, which, writeVmImage,
  useDaemonToken,
} from './lib.mjs';

const TARGETS = { restoreVsConvert: 0.9, vsRestic: 2, warmRandVsNbdkit: 0.7 };
/** Full restores per side (alternating with qemu-img convert); the best of each counts. */
const RESTORE_ROUNDS = 3;
const VM = 'vm';
const VMQ = 'vmq';
const BITMAP = 'cbt';

const USAGE = `usage: node tools/bench/repo.mjs [options]
  --size SIZE            image size (default 2G)
  --chunk-sizes LIST     repository chunk sizes to sweep, each a fresh repository (default 64K,256K,1M,4M)
  --chunk-size SIZE      the main chunk size: restore, dirty bitmap and nbdkit comparisons (default 1M,
                         the repository default; added to the sweep if missing)
  --change PERCENT       share of the image rewritten between the two backups (default 2)
  --change-run SIZE      length of each rewritten run (default 4K: scattered single blocks)
  --runtime SECONDS      fio queue-depth-32 jobs (default 10)
  --latency-runtime S    fio queue-depth-1 latency jobs (default 5)
  --cache-size SIZE      rebound's chunk cache (default 1.5x the image, at least 256M: holds the disk)
  --small-cache SIZE     also measure warm random reads with this cache, main chunk size only
                         (default 256M, the daemon's default; 0 skips)
  --seed N               image and change seed (default 1)
  --quick                256M image, 3 s fio jobs, 2 s latency jobs, 64M small cache (explicit
                         options still win)
  --json                 print the results as JSON instead of tables
  --check                exit 1 when a target is missed
  --tmpdir DIR           parent of the temp dir (default ${os.tmpdir()})
  --rebound-node-args=ARGS  extra node flags for the daemon (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof")
  --report FILE          print the tables of a saved --json result, run nothing
  -h, --help`;

// ---- the 2 % change ---------------------------------------------------------------------------

/** `count` distinct runs of `runBytes` at random aligned offsets. */
function makeChanges(size, fraction, runBytes, seed) {
  const slots = Math.floor(size / runBytes);
  const count = Math.max(1, Math.round((fraction * size) / runBytes));
  if (count > slots / 2) throw new Error('--change is too large for rejection sampling (keep it under 50 %)');
  const rng = makeRng(seed * 7919 + 17);
  const picked = new Set();
  while (picked.size < count) picked.add(rng.int(slots));
  return [...picked].sort((a, b) => a - b).map((slot, i) => ({ i, off: slot * runBytes, len: runBytes, seed: seed * 1_000_003 + i }));
}

const WORDS = ['update', 'commit', 'session', 'user', 'index', 'page', 'journal', 'inode', 'cache', 'write', 'flush', 'txn', 'row', 'key'];

/**
 * What a run is rewritten with: fresh data like the image's, distinct per run (a fill byte would
 * compress to nothing and dedup across runs): 2 of 3 runs log/record text, 1 of 3 random bytes.
 */
function changeContent(c) {
  const rng = makeRng(c.seed);
  const buf = Buffer.alloc(c.len);
  if (c.i % 3 === 2) return rng.fill(buf);
  let pos = 0;
  while (pos < buf.length) {
    const w = () => WORDS[rng.int(WORDS.length)];
    pos += buf.write(`#${c.i}:${pos} 2026-11-${String(1 + rng.int(28)).padStart(2, '0')} ${w()} ${w()}=${rng.int(1e6)} ${w()}=${rng.next().toString(16)} ${w()}\n`, pos, 'latin1');
  }
  return buf;
}

function applyChangesToFile(file, changes) {
  const fd = fs.openSync(file, 'r+');
  try {
    for (const c of changes) fs.writeSync(fd, changeContent(c), 0, c.len, c.off);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The same writes through qemu-io (so a persistent dirty bitmap records them): each run's content
 * goes to a file that `write -s FILE` reads, many writes per qemu-io process.
 */
async function applyChangesWithQemuIo(qcow, changes, dir) {
  const BATCH = 2000;
  fs.mkdirSync(dir, { recursive: true });
  try {
    for (let i = 0; i < changes.length; i += BATCH) {
      const batch = changes.slice(i, i + BATCH);
      const cmds = batch.flatMap((c) => {
        const f = path.join(dir, `${c.i}`);
        fs.writeFileSync(f, changeContent(c));
        return ['-c', `write -q -s ${f} ${c.off} ${c.len}`];
      });
      await run('qemu-io', ['-f', 'qcow2', ...cmds, qcow], { timeoutMs: 120_000 });
      for (const c of batch) fs.rmSync(path.join(dir, `${c.i}`), { force: true });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Chunks a change touches when the change is tracked at `granularity` (bitmap) resolution. */
function touchedChunks(changes, size, chunkSize, granularity = 1) {
  const set = new Set();
  for (const c of changes) {
    const a = Math.floor(c.off / granularity) * granularity;
    const b = Math.min(size, Math.ceil((c.off + c.len) / granularity) * granularity);
    for (let i = Math.floor(a / chunkSize); i <= Math.floor((b - 1) / chunkSize); i++) set.add(i);
  }
  let bytes = 0;
  for (const i of set) bytes += Math.min(chunkSize, size - i * chunkSize);
  return { chunks: set.size, bytes, total: Math.ceil(size / chunkSize) };
}

/** The commit of the tree the benchmark runs from, if it is a git checkout. */
function gitHead() {
  const r = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', timeout: 10_000 });
  const dirty = spawnSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src'], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? `${r.stdout.trim()}${dirty.stdout?.trim() ? '+changes in src/' : ''}` : undefined;
}

// ---- rebound --------------------------------------------------------------------------------

function sizeLabel(n) {
  if (n % GiB === 0) return `${n / GiB}G`;
  if (n % MiB === 0) return `${n / MiB}M`;
  return `${n / 1024}K`;
}

const pointUri = (sock, point = 'latest') => `nbd+unix:///${VM}@${point}/disk0?socket=${encodeURIComponent(sock)}`;

/** Starts `rebound serve` on a Unix socket and HTTP 127.0.0.1:0; server.http is the API base URL. */
async function startDaemon(ctx, { dataDir, sock, dir, logName }) {
  const args = [...ctx.nodeArgs, REBOUND_MAIN, 'serve', '--data', dataDir, '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', ...pathFlags()];
  const server = await startServer({
    name: 'rebound',
    logName,
    cmd: process.execPath,
    args,
    sock,
    uri: pointUri(sock),
    dir,
    ready: (_s, text) => {
      const m = /HTTP API: (http:\/\/[^/\s]+)\//.exec(text);
      return m ? m[1] : undefined;
    },
  });
  server.http = server.ready;
  useDaemonToken(dataDir);
  return server;
}

async function cacheStats(daemon) {
  const res = await fetch(`${daemon.http}/v1/repo`, {
    headers: process.env.REBOUND_TOKEN ? { authorization: `Bearer ${process.env.REBOUND_TOKEN}` } : {},
    signal: AbortSignal.timeout(10_000),
  });
  if (!res.ok) throw new Error(`GET /v1/repo: ${res.status}`);
  return (await res.json()).cache;
}

/** Page cache to write and free before each timed step (lib.mjs settleBeforeTimedCopy): the image and a quarter more. */
const settleBytes = (ctx) => Math.ceil((ctx.size * 1.25) / MiB) * MiB;

/** Runs a rebound client command with --json; resolves with the finished job and the wall time. */
async function reboundJob(ctx, daemon, args, timeoutMs) {
  const cpu0 = cpuSeconds(daemon.pid);
  const r = await run(process.execPath, [REBOUND_MAIN, '--server', daemon.http, ...args, '--json'], { timeoutMs });
  const job = JSON.parse(r.stdout);
  if (job.state !== 'succeeded') throw new Error(`rebound ${args.join(' ')}: ${job.state} ${JSON.stringify(job.error)}`);
  return { job, wallSeconds: r.seconds, daemonCpuSec: cpuSeconds(daemon.pid) - cpu0, command: `rebound ${args.join(' ')} --json` };
}

async function backup(ctx, daemon, vm, source, extra = []) {
  const timeoutMs = 120_000 + (ctx.size / (4 * MiB)) * 1000;
  await settleBeforeTimedCopy(ctx.tmpDir, settleBytes(ctx));
  const r = await reboundJob(ctx, daemon, ['backup', vm, '--disk', `disk0=${source}`, ...extra], timeoutMs);
  const m = r.job.result;
  const d = m.disks[0];
  const seconds = m.durationMs / 1000;
  // The new point's export is published right after the job ends; wait for it.
  await waitNbd(`nbd+unix:///${vm}@${m.id}/disk0?socket=${encodeURIComponent(daemon.sock)}`, { timeoutMs: 30_000 });
  return {
    id: m.id,
    seconds,
    wallSeconds: r.wallSeconds,
    mibps: ctx.size / MiB / seconds,
    daemonCpuSec: r.daemonCpuSec,
    readBytes: d.readBytes,
    chunks: d.chunks,
    zeroChunks: d.zeroChunks,
    newChunks: d.newChunks,
    newBytes: d.newBytes,
    incremental: d.incremental,
    command: r.command,
  };
}

/**
 * The same backups and restore with restic (Debian's) and a local repository beside rebound's:
 * backup of the base image, backup of the changed one (restic's incremental), restore of the latest
 * to a file, then `sync -f` (rebound's restore ends with its data synced, restic's does not).
 */
async function measureRestic(ctx, label) {
  const repo = path.join(ctx.tmpDir, `restic-${label}`);
  const env = { RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: path.join(ctx.tmpDir, 'restic-cache'), RESTIC_REPOSITORY: repo };
  Object.assign(process.env, env);
  const timeoutMs = 600_000 + (ctx.size / MiB) * 1000;
  await run('restic', ['init'], { timeoutMs: 60_000 });
  const out = { version: (await run('restic', ['version'], { timeoutMs: 30_000 })).stdout.trim().split(' ').slice(0, 2).join(' ') };
  for (const [key, img] of [['full', ctx.base], ['changed', ctx.changed]]) {
    await settleBeforeTimedCopy(ctx.tmpDir, settleBytes(ctx));
    log(`[${label}] restic backup (${key})`);
    const r = await run('restic', ['backup', '--quiet', img], { timeoutMs });
    out[key] = { seconds: r.seconds, mibps: ctx.size / MiB / r.seconds };
  }
  const target = path.join(ctx.tmpDir, `restic-restore-${label}`);
  await settleBeforeTimedCopy(ctx.tmpDir, settleBytes(ctx));
  log(`[${label}] restic restore`);
  const t = performance.now();
  await run('restic', ['restore', 'latest', '--target', target], { timeoutMs });
  const restored = path.join(target, ctx.changed);
  await run('sync', ['-f', restored], { timeoutMs: 120_000 });
  const seconds = (performance.now() - t) / 1000;
  out.restore = { seconds, mibps: ctx.size / MiB / seconds };
  await run('cmp', [restored, ctx.changed], { timeoutMs: 300_000 });
  out.commands = ['restic init', `restic backup --quiet ${ctx.base}`, `restic backup --quiet ${ctx.changed}`, `restic restore latest --target DIR; sync -f FILE`];
  fs.rmSync(target, { recursive: true, force: true });
  fs.rmSync(repo, { recursive: true, force: true });
  return out;
}

function indexBytes(dataDir, vm, id) {
  return fs.readFileSync(path.join(dataDir, 'repo', 'vms', vm, id, 'disk0.fidx'));
}

// ---- one repository -------------------------------------------------------------------------

async function measureRepo(ctx, chunkSize, main) {
  const label = sizeLabel(chunkSize);
  const dir = fs.mkdtempSync(path.join(ctx.tmpDir, `repo-${label}-`));
  const dataDir = path.join(dir, 'data');
  const sock = path.join(dir, 'r.sock');
  fs.mkdirSync(dataDir);
  const writeConfig = (cacheSize) => fs.writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ chunkSize, cacheSize }) + '\n');
  writeConfig(ctx.cacheSize);
  let starts = 0;
  const start = () => startDaemon(ctx, { dataDir, sock, dir: ctx.tmpDir, logName: `rebound-${label}-${++starts}` });
  const restart = async (d) => {
    await stopServer(d);
    const n = await start();
    await waitNbd(n.uri);
    return n;
  };
  const R = {
    chunkSize,
    config: { chunkSize, cacheSize: ctx.cacheSize },
  };
  let daemon = await start();
  R.daemonCommand = daemon.commandLine;
  let nbdkit;
  try {
    // 1-2: full backup, then the changed image (read in full, deduplicated against point 1).
    log(`[${label}] backup of the raw image`);
    R.full = await backup(ctx, daemon, VM, ctx.base);
    log(`  ${fmt(R.full.mibps)} MiB/s, ${fmt(R.full.newBytes / MiB)} MiB stored`);
    R.repoAfterFull = dirUsage(path.join(dataDir, 'repo'));
    R.codec = JSON.parse(fs.readFileSync(path.join(dataDir, 'repo', 'repo.json'), 'utf8')).codec;
    log(`[${label}] backup of the changed image`);
    R.changed = await backup(ctx, daemon, VM, ctx.changed);
    log(`  ${R.changed.seconds.toFixed(1)} s, ${fmt(R.changed.newBytes / MiB, 1)} MiB stored`);
    R.repo = dirUsage(path.join(dataDir, 'repo'));
    R.touched = touchedChunks(ctx.changes, ctx.size, chunkSize, ctx.bitmapGranularity);

    if (main) {
      // 5: the same change as a dirty-bitmap incremental from qemu-nbd.
      const qsock = path.join(dir, 'q.sock');
      const quri = `nbd+unix:///vm?socket=${encodeURIComponent(qsock)}`;
      const qemuNbd = (extra) =>
        startServer({ name: 'qemu-nbd', logName: 'qemu-nbd', cmd: 'qemu-nbd', args: ['-r', '-f', 'qcow2', '-x', 'vm', ...extra, '-k', qsock, '-t', ctx.qcow], sock: qsock, uri: quri, dir });
      log(`[${label}] full backup from qemu-nbd (qcow2)`);
      let q = await qemuNbd([]);
      R.qemuNbdCommand = q.commandLine;
      try {
        R.qcowFull = await backup(ctx, daemon, VMQ, quri);
      } finally {
        await stopServer(q);
      }
      log(`  ${R.qcowFull.seconds.toFixed(1)} s, read ${fmt(R.qcowFull.readBytes / MiB)} MiB, ${fmt(R.qcowFull.newBytes / MiB, 1)} MiB stored`);
      log(`[${label}] qemu-img bitmap --add, ${ctx.changes.length} writes through qemu-io`);
      await run('qemu-img', ['bitmap', '--add', ctx.qcow, BITMAP], { timeoutMs: 60_000 });
      const t = Date.now();
      await applyChangesWithQemuIo(ctx.qcow, ctx.changes, path.join(dir, 'changes'));
      R.qemuIoSeconds = (Date.now() - t) / 1000;
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', ctx.qcow], { timeoutMs: 30_000 })).stdout);
      const bm = info['format-specific']?.data?.bitmaps?.find((b) => b.name === BITMAP);
      R.bitmapGranularity = bm?.granularity;
      R.expectedDirty = touchedChunks(ctx.changes, ctx.size, chunkSize, bm?.granularity ?? 1);
      log(`[${label}] incremental backup with --dirty-bitmap ${BITMAP}`);
      q = await qemuNbd(['-B', BITMAP]);
      R.qemuNbdBitmapCommand = q.commandLine;
      try {
        R.incremental = await backup(ctx, daemon, VMQ, quri, ['--dirty-bitmap', BITMAP]);
      } finally {
        await stopServer(q);
      }
      log(`  ${R.incremental.seconds.toFixed(1)} s, read ${fmt(R.incremental.readBytes / MiB)} MiB, ${R.incremental.incremental?.dirtyChunks} dirty chunks`);
      // The incremental point must map exactly the content of the changed raw image.
      R.incrementalMatchesChanged = indexBytes(dataDir, VMQ, R.incremental.id).equals(indexBytes(dataDir, VM, R.changed.id));
      if (!R.incrementalMatchesChanged) throw new Error('the dirty-bitmap incremental point differs from the backup of the changed raw image');

      // 6: full restore against qemu-img convert, interleaved, best of RESTORE_ROUNDS; each starts
      // settled (lib.mjs settleBeforeTimedCopy): no writeback of an earlier step competes with it,
      // and neither side pays for memory the VM gave back to its host.
      const out = path.join(ctx.tmpDir, 'restored.raw');
      R.restore = { rebound: [], convert: [] };
      for (let i = 0; i < RESTORE_ROUNDS; i++) {
        fs.rmSync(out, { force: true });
        await settleBeforeTimedCopy(ctx.tmpDir, settleBytes(ctx));
        log(`[${label}] restore #${i + 1}`);
        const r = await reboundJob(ctx, daemon, ['restore', `${VM}@latest`, '--disk', 'disk0', '--to', out], 120_000 + (ctx.size / (4 * MiB)) * 1000);
        R.restore.rebound.push({ seconds: r.job.result.seconds, wallSeconds: r.wallSeconds, mibps: ctx.size / MiB / r.job.result.seconds, daemonCpuSec: r.daemonCpuSec, writtenBytes: r.job.result.writtenBytes });
        R.restore.reboundCommand = r.command;
        log(`  ${fmt(ctx.size / MiB / r.job.result.seconds)} MiB/s`);
        if (i === 0) {
          await run('cmp', [out, ctx.changed], { timeoutMs: 300_000 });
          R.restore.verified = true;
        }
        fs.rmSync(out, { force: true });
        await settleBeforeTimedCopy(ctx.tmpDir, settleBytes(ctx));
        log(`[${label}] qemu-img convert #${i + 1}`);
        const args = ['convert', '-f', 'raw', '-O', 'raw', '-t', 'writeback', ctx.changed, out];
        const c = await run('qemu-img', args, { timeoutMs: 120_000 + (ctx.size / (4 * MiB)) * 1000 });
        R.restore.convert.push({ seconds: c.seconds, mibps: ctx.size / MiB / c.seconds });
        R.restore.convertCommand = `qemu-img ${args.join(' ')}`;
        log(`  ${fmt(ctx.size / MiB / c.seconds)} MiB/s`);
      }
      fs.rmSync(out, { force: true });
      const best = (xs) => xs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
      R.restore.best = { rebound: best(R.restore.rebound), convert: best(R.restore.convert) };
      R.restore.ratio = R.restore.best.rebound.mibps / R.restore.best.convert.mibps;
      if (which('restic')) R.restic = await measureRestic(ctx, label);

      const ksock = path.join(dir, 'k.sock');
      nbdkit = await startServer({
        name: 'nbdkit', cmd: 'nbdkit', args: ['-r', '-f', '--exit-with-parent', '-U', ksock, 'file', ctx.changed],
        sock: ksock, uri: `nbd+unix:///?socket=${encodeURIComponent(ksock)}`, dir,
      });
      R.nbdkitCommand = nbdkit.commandLine;
      R.nbdkit = {};
    }

    // 3-4: reads of the point's export. A whole-disk copy from a cold chunk cache (which leaves
    // every chunk cached), warm random reads, then cold random reads after restarts.
    const rr32 = { name: 'rr', rw: 'randread', bs: '4k', iodepth: 32, runtime: ctx.runtime };
    const rr1 = { name: 'lat', rw: 'randread', bs: '4k', iodepth: 1, runtime: ctx.latRuntime };
    const fioWithCache = async (d, job) => {
      const c0 = await cacheStats(d);
      const f = await measureFio(d, job);
      const c1 = await cacheStats(d);
      const misses = c1.misses - c0.misses;
      const hits = c1.hits - c0.hits;
      return { ...f, cacheMisses: misses, cacheHits: hits, cacheHitPct: (100 * hits) / Math.max(1, hits + misses) };
    };
    daemon = await restart(daemon);
    log(`[${label}] nbdcopy whole disk, cold chunk cache`);
    R.coldCopy = await measureNbdcopy(daemon, ctx.size);
    R.cacheAfterCopy = await cacheStats(daemon);
    log(`  ${fmt(R.coldCopy.mibps)} MiB/s; the chunk cache now holds ${fmt(R.cacheAfterCopy.bytes / MiB)} MiB`);
    if (main) {
      log(`[${label}] nbdcopy whole disk, nbdkit`);
      R.nbdkit.copy = await measureNbdcopy(nbdkit, ctx.size);
      log(`  ${fmt(R.nbdkit.copy.mibps)} MiB/s`);
    }
    log(`[${label}] fio 4K randread qd32, warm chunk cache (${ctx.runtime} s)`);
    R.warmRand = await fioWithCache(daemon, rr32);
    log(`  ${fmt(R.warmRand.iops)} IOPS, chunk cache hits ${fmt(R.warmRand.cacheHitPct)} %`);
    if (main) {
      log(`[${label}] fio 4K randread qd32, nbdkit (${ctx.runtime} s)`);
      R.nbdkit.rand2 = await measureFio(nbdkit, rr32);
      log(`  ${fmt(R.nbdkit.rand2.iops)} IOPS`);
      R.warmRatio = R.warmRand.iops / R.nbdkit.rand2.iops;
      daemon = await restart(daemon);
      log(`[${label}] fio 4K randread qd32, cold chunk cache (${ctx.runtime} s)`);
      R.coldRand = await fioWithCache(daemon, rr32);
      log(`  ${fmt(R.coldRand.iops)} IOPS, chunk cache hits ${fmt(R.coldRand.cacheHitPct)} %`);
      log(`[${label}] fio 4K randread qd32, nbdkit (${ctx.runtime} s)`);
      R.nbdkit.rand1 = await measureFio(nbdkit, rr32);
      log(`  ${fmt(R.nbdkit.rand1.iops)} IOPS`);
      R.coldRatio = R.coldRand.iops / R.nbdkit.rand1.iops;
    }
    daemon = await restart(daemon);
    log(`[${label}] fio 4K randread qd1, cold chunk cache (${ctx.latRuntime} s)`);
    R.coldLat = await fioWithCache(daemon, rr1);
    log(`  p50 ${fmt(R.coldLat.clatP50Us)} us, p99 ${fmt(R.coldLat.clatP99Us)} us, chunk cache hits ${fmt(R.coldLat.cacheHitPct)} %`);
    if (main) {
      log(`[${label}] fio 4K randread qd1, nbdkit (${ctx.latRuntime} s)`);
      R.nbdkit.lat = await measureFio(nbdkit, rr1);
      log(`  p50 ${fmt(R.nbdkit.lat.clatP50Us)} us, p99 ${fmt(R.nbdkit.lat.clatP99Us)} us`);
      if (ctx.smallCache > 0) {
        await stopServer(daemon);
        writeConfig(ctx.smallCache);
        daemon = await start();
        await waitNbd(daemon.uri);
        log(`[${label}] chunk cache ${fmt(ctx.smallCache / MiB)} MiB: nbdcopy whole disk, then fio 4K randread qd32 (${ctx.runtime} s)`);
        await measureNbdcopy(daemon, ctx.size);
        R.smallCacheRand = await fioWithCache(daemon, rr32);
        R.smallCacheRand.cacheSize = ctx.smallCache;
        log(`  ${fmt(R.smallCacheRand.iops)} IOPS, chunk cache hits ${fmt(R.smallCacheRand.cacheHitPct)} %`);
        writeConfig(ctx.cacheSize);
      }
    }
    return R;
  } finally {
    await stopServer(daemon);
    if (nbdkit) await stopServer(nbdkit);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---- report ---------------------------------------------------------------------------------

function report(out) {
  const { config: c, image, repos } = out;
  const main = repos[sizeLabel(c.mainChunkSize)];
  const mib = (b, d = 0) => fmt(b / MiB, d);
  const x = (v) => (v === undefined || Number.isNaN(v) ? 'n/a' : `${v.toFixed(2)}x`);
  const pct = (v, d = 1) => `${fmt(v, d)} %`;
  const lines = [];
  const p = (s = '') => lines.push(s);
  const mix = Object.entries(image.bytesByClass).map(([k, v]) => `${k} ${fmt((100 * v) / c.size)} %`).join(', ');
  p(`\nRepository benchmark: ${mib(c.size)} MiB image (${mix}), ${c.change.percent} % rewritten ` +
    `(${fmt(c.change.runs)} x ${fmt(c.change.runBytes / 1024)} KiB at random offsets), ${c.cpus} CPUs, node ${c.node}`);
  p(`rebound ${c.versions.rebound ?? "n/a"}, chunk codec ${[...new Set(Object.values(repos).map((r) => r.codec))].join('/')}; ` +
    `fio ${c.runtime} s (qd32) / ${c.latRuntime} s (qd1); chunk cache ${mib(c.cacheSize)} MiB`);
  p('page cache warm for every server; "cold" = rebound daemon restarted (empty chunk cache)');

  p(`\n1-2. Backups, main chunk size ${sizeLabel(c.mainChunkSize)} (time = the job's own duration)\n`);
  const brow = (name, b) => [name, b.seconds.toFixed(1), fmt(c.size / MiB / b.seconds), mib(b.readBytes), fmt(b.newChunks), mib(b.newBytes, 1), fmt(b.daemonCpuSec, 1)];
  const brows = [['backup', 'time s', 'MiB/s (of disk)', 'read MiB', 'new chunks', 'stored MiB', 'daemon CPU s']];
  brows.push(brow('full, raw file (point 1)', main.full));
  brows.push(brow(`after ${c.change.percent} % change, raw file (point 2)`, main.changed));
  if (main.qcowFull) {
    brows.push(brow('full from qemu-nbd qcow2 (vmq 1)', main.qcowFull));
    brows.push(brow(`incremental, --dirty-bitmap (vmq 2)`, main.incremental));
  }
  p(table(brows));
  const logical = 2 * c.size;
  p(`\n  point 2 stored ${mib(main.changed.newBytes, 1)} MiB for ${mib(c.size)} MiB of disk: dedup ratio ${x(c.size / main.changed.newBytes)} ` +
    `(${pct((100 * main.changed.newBytes) / main.full.newBytes)} of what point 1 stored)`);
  p(`  repository after points 1+2: ${mib(main.repo.allocated)} MiB on disk (${mib(main.repo.bytes)} MiB in ${fmt(main.repo.files)} files) ` +
    `for ${mib(logical)} MiB logical: ${x(logical / main.repo.allocated)}`);
  if (main.incremental) {
    const inc = main.incremental;
    const dirty = inc.incremental?.dirtyChunks ?? NaN;
    p(`  dirty bitmap (granularity ${fmt(main.bitmapGranularity / 1024)} KiB): ${fmt(dirty)} dirty chunks of ${fmt(main.expectedDirty.total)} ` +
      `(expected from the writes: ${fmt(main.expectedDirty.chunks)}); read ${mib(inc.readBytes, 1)} MiB = ` +
      `${pct((100 * inc.readBytes) / (dirty * c.mainChunkSize))} of dirty chunks x chunk size, ${pct((100 * inc.readBytes) / c.size)} of the image, ` +
      `${x(inc.readBytes / c.change.bytes)} the rewritten data; incremental point identical to point 2: ${main.incrementalMatchesChanged ? 'yes' : 'NO'}`);
  }

  if (main.restore) {
    const r = main.restore;
    p(`\n3. Full restore to a file (same filesystem), MiB/s of disk, best of ${r.rebound.length}; both end with the data synced\n`);
    p(table([
      ['restore', ...r.rebound.map((_, i) => `run ${i + 1}`), 'best', 'best s'],
      ['rebound restore (job time)', ...r.rebound.map((v) => fmt(v.mibps)), fmt(r.best.rebound.mibps), r.best.rebound.seconds.toFixed(2)],
      ['rebound restore (CLI wall time)', ...r.rebound.map((v) => fmt(c.size / MiB / v.wallSeconds)), '', ''],
      ['rebound daemon CPU s per GiB', ...r.rebound.map((v) => fmt(v.daemonCpuSec / (c.size / GiB), 2)), '', ''],
      ['qemu-img convert -O raw -t writeback', ...r.convert.map((v) => fmt(v.mibps)), fmt(r.best.convert.mibps), r.best.convert.seconds.toFixed(2)],
    ]));
    p(`  rebound/qemu-img: ${x(r.ratio)}; restored file verified identical (cmp): ${r.verified ? 'yes' : 'no'}`);
  }

  if (main.restic) {
    const rs = main.restic;
    p(`\n3b. Against ${rs.version} with a local repository (same images, same filesystem)\n`);
    p(table([
      ['work', 'rebound s', `${rs.version} s`, 'rebound / restic (speed)', 'rebound daemon CPU s per GiB'],
      ['backup of the raw image (first)', main.full.seconds.toFixed(2), rs.full.seconds.toFixed(2), x(rs.full.seconds / main.full.seconds), fmt(main.full.daemonCpuSec / (c.size / GiB), 2)],
      ['backup of the changed image (second)', main.changed.seconds.toFixed(2), rs.changed.seconds.toFixed(2), x(rs.changed.seconds / main.changed.seconds), fmt(main.changed.daemonCpuSec / (c.size / GiB), 2)],
      ['restore of the latest to a file, synced', main.restore.best.rebound.seconds.toFixed(2), rs.restore.seconds.toFixed(2), x(rs.restore.seconds / main.restore.best.rebound.seconds), fmt(main.restore.best.rebound.daemonCpuSec / (c.size / GiB), 2)],
    ]));
    p('  restic restore verified identical (cmp): yes; rebound: best of its restores, restic: one run');
  }

  if (main.nbdkit) {
    const k = main.nbdkit;
    p(`\n4. Reads of the restore point export vs nbdkit file (same data), main chunk size\n`);
    p(table([
      ['metric', 'rebound', 'nbdkit', 'rebound/nbdkit', 'rebound chunk cache hits'],
      ['nbdcopy whole disk, cold, MiB/s', fmt(main.coldCopy.mibps), fmt(k.copy.mibps), x(main.coldCopy.mibps / k.copy.mibps), ''],
      ['4K randread qd32, cold, IOPS', fmt(main.coldRand.iops), fmt(k.rand1.iops), x(main.coldRatio), pct(main.coldRand.cacheHitPct)],
      ['4K randread qd1, cold, p50 us', fmt(main.coldLat.clatP50Us), fmt(k.lat.clatP50Us), '', pct(main.coldLat.cacheHitPct)],
      ['4K randread qd1, cold, p99 us', fmt(main.coldLat.clatP99Us), fmt(k.lat.clatP99Us), '', ''],
      [`4K randread qd32, warm, IOPS`, fmt(main.warmRand.iops), fmt(k.rand2.iops), x(main.warmRatio), pct(main.warmRand.cacheHitPct)],
      ...(main.smallCacheRand
        ? [[`  same, cache ${mib(main.smallCacheRand.cacheSize)} MiB, IOPS`, fmt(main.smallCacheRand.iops), fmt(k.rand2.iops), x(main.smallCacheRand.iops / k.rand2.iops), pct(main.smallCacheRand.cacheHitPct)]]
        : []),
      ['server CPU us per 4K read, warm', fmt(main.warmRand.serverCpuUsPerIo, 1), fmt(k.rand2.serverCpuUsPerIo, 1), '', ''],
    ]));
  }

  p(`\n5. Chunk size sweep (each a fresh repository)\n`);
  const labels = Object.keys(repos);
  const row = (name, f) => [name, ...labels.map((l) => f(repos[l]))];
  p(table([
    ['metric', ...labels],
    row('full backup, MiB/s of disk', (r) => fmt(r.full.mibps)),
    row('daemon CPU s per GiB, full backup', (r) => fmt(r.full.daemonCpuSec / (c.size / GiB), 1)),
    row('stored by the full backup, MiB', (r) => mib(r.full.newBytes)),
    row(`stored by the ${c.change.percent} % change, MiB`, (r) => mib(r.changed.newBytes, 1)),
    row('dedup ratio of point 2 (disk / stored)', (r) => x(c.size / r.changed.newBytes)),
    row('chunks touched by the change', (r) => pct((100 * r.touched.chunks) / r.touched.total, 0)),
    row('bitmap incremental reads, MiB', (r) => mib(r.touched.bytes)),
    row('2nd backup of the raw file, s', (r) => r.changed.seconds.toFixed(1)),
    row('repository on disk (2 points), MiB', (r) => mib(r.repo.allocated)),
    row('files in the repository', (r) => fmt(r.repo.files)),
    row('logical / on disk (2 points)', (r) => x(logical / r.repo.allocated)),
    row('nbdcopy whole disk, cold, MiB/s', (r) => fmt(r.coldCopy.mibps)),
    row('4K randread qd1 cold, p50 us', (r) => fmt(r.coldLat.clatP50Us)),
    row('4K randread qd1 cold, p99 us', (r) => fmt(r.coldLat.clatP99Us)),
    row('4K randread qd1 cold, mean us', (r) => fmt(r.coldLat.clatMeanUs)),
    row('  chunk cache hits during it', (r) => pct(r.coldLat.cacheHitPct, 0)),
    row('4K randread qd32 warm, IOPS', (r) => fmt(r.warmRand.iops)),
    row('  server CPU us per read', (r) => fmt(r.warmRand.serverCpuUsPerIo, 1)),
  ]));
  p(`  "bitmap incremental reads": chunks holding a ${fmt(c.bitmapGranularity / 1024)} KiB bitmap granule that the change touched (computed; measured for ${sizeLabel(c.mainChunkSize)} above).`);

  p('\nTargets:');
  for (const t of out.targets) p(`  ${t.label}: ${t.value} (need ${t.need})  ${t.met ? 'met' : 'NOT met'}`);

  p('\nCommands:');
  p(`  image      ${image.commands.join('\n             ')}`);
  for (const l of labels) p(`  rebound    ${repos[l].daemonCommand}   # ${l}: DATA/config.json ${JSON.stringify(repos[l].config)}`);
  if (main.qemuNbdCommand) p(`  qemu-nbd   ${main.qemuNbdCommand}\n  qemu-nbd   ${main.qemuNbdBitmapCommand}`);
  if (main.nbdkitCommand) p(`  nbdkit     ${main.nbdkitCommand}`);
  p(`  backup     node dist/cli/main.js --server URL backup ${VM} --disk disk0=IMG --json   (vmq: --disk disk0=nbd+unix:///vm?socket=Q [--dirty-bitmap ${BITMAP}])`);
  if (main.restore) p(`  restore    node dist/cli/main.js --server URL restore ${VM}@latest --disk disk0 --to OUT --json\n  convert    ${main.restore.convertCommand}`);
  if (main.nbdkit) p(`  fio        ${main.warmRand.command}\n  fio        ${main.coldLat.command}`);
  return lines.join('\n');
}

// ---- main -----------------------------------------------------------------------------------

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string' },
      'chunk-sizes': { type: 'string', default: '64K,256K,1M,4M' },
      'chunk-size': { type: 'string', default: '1M' },
      change: { type: 'string', default: '2' },
      'change-run': { type: 'string', default: '4K' },
      runtime: { type: 'string' },
      'latency-runtime': { type: 'string' },
      'cache-size': { type: 'string' },
      'small-cache': { type: 'string' },
      seed: { type: 'string', default: '1' },
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      tmpdir: { type: 'string', default: os.tmpdir() },
      'rebound-node-args': { type: 'string', default: '' },
      report: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (values.report) {
    const saved = JSON.parse(fs.readFileSync(values.report, 'utf8'));
    console.log(report(saved));
    console.log(`\nTotal time ${fmt(saved.config.totalSeconds)} s.`);
    return 0;
  }
  if (!fs.existsSync(REBOUND_MAIN)) throw new Error(`${REBOUND_MAIN} is missing: run 'npm run build' first`);
  for (const tool of ['nbdkit', 'nbdinfo', 'nbdcopy', 'fio', 'qemu-img', 'qemu-nbd', 'qemu-io', 'cmp', 'cp']) {
    if (!which(tool)) throw new Error(`${tool} is not installed (tools/setup.sh installs it)`);
  }
  const { parseSize } = await import(path.join(ROOT, 'dist/util/size.js'));
  const quick = values.quick;
  const size = parseSize(values.size ?? (quick ? '256M' : '2G'));
  if (size < 16 * MiB || size % (64 * 1024) !== 0) throw new Error('--size must be at least 16M and a multiple of 64K');
  const runtime = Number(values.runtime ?? (quick ? 3 : 10));
  const latRuntime = Number(values['latency-runtime'] ?? (quick ? 2 : 5));
  for (const [k, v] of [['--runtime', runtime], ['--latency-runtime', latRuntime]]) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a whole number of seconds >= 1`);
  }
  const checkChunk = (s) => {
    const n = parseSize(s.trim());
    if (n < 4096 || n > 16 * MiB || (n & (n - 1)) !== 0) throw new Error(`chunk size ${s}: a power of two from 4K to 16M`);
    return n;
  };
  const mainChunkSize = checkChunk(values['chunk-size']);
  const chunkSizes = [...new Set([...values['chunk-sizes'].split(',').filter((s) => s.trim()).map(checkChunk), mainChunkSize])].sort((a, b) => a - b);
  const cacheSize = values['cache-size'] ? parseSize(values['cache-size']) : Math.max(256 * MiB, Math.ceil((1.5 * size) / MiB) * MiB);
  const smallCache = parseSize(values['small-cache'] ?? (quick ? '64M' : '256M'));
  const changePct = Number(values.change);
  if (!(changePct > 0 && changePct < 50)) throw new Error('--change must be a percentage between 0 and 50');
  const changeRun = parseSize(values['change-run']);
  if (changeRun < 512 || changeRun % 512 !== 0 || size % changeRun !== 0) throw new Error('--change-run must be a multiple of 512 that divides the size');
  const seed = Number(values.seed);
  const nodeArgs = values['rebound-node-args'].split(/\s+/).filter(Boolean);

  // Hard bound on the whole run, whatever hangs (every step has its own, tighter limit).
  const perRepoS = 4 * (120 + size / (4 * MiB)) + 6 * (runtime + 60) + 4 * (latRuntime + 60) + 300;
  const budgetMs = (600 + chunkSizes.length * perRepoS) * 1000;
  const watchdog = setTimeout(() => {
    log(`run exceeded its time limit of ${Math.round(budgetMs / 1000)} s; aborting`);
    process.exit(3);
  }, budgetMs);

  const tmpDir = fs.mkdtempSync(path.join(values.tmpdir, 'rebound-bench-repo-'));
  setTmpDir(tmpDir);
  if (path.join(tmpDir, 'repo-64K-XXXXXX', 'r.sock').length > 100) throw new Error(`--tmpdir ${values.tmpdir} is too long for Unix socket paths`);
  const base = path.join(tmpDir, 'base.raw');
  const changed = path.join(tmpDir, 'changed.raw');
  const qcow = path.join(tmpDir, 'vm.qcow2');
  const started = Date.now();

  log(`writing a ${fmt(size / MiB)} MiB VM-like image (seed ${seed})`);
  let t = Date.now();
  const bytesByClass = writeVmImage(base, size, { seed });
  const imageSeconds = (Date.now() - t) / 1000;
  log(`  ${imageSeconds.toFixed(1)} s: ${Object.entries(bytesByClass).map(([k, v]) => `${k} ${fmt(v / MiB)} MiB`).join(', ')}`);
  const changes = makeChanges(size, changePct / 100, changeRun, seed);
  log(`changed copy: ${changes.length} runs of ${changeRun} bytes rewritten`);
  await run('cp', ['--sparse=always', base, changed], { timeoutMs: 300_000 });
  applyChangesToFile(changed, changes);
  log('converting the base image to qcow2');
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', base, qcow], { timeoutMs: 300_000 });
  await warmPageCache(base, { timeoutMs: 300_000 });
  await warmPageCache(changed, { timeoutMs: 300_000 });

  const ctx = {
    size, runtime, latRuntime, cacheSize, smallCache, nodeArgs, tmpDir, base, changed, qcow, changes,
    bitmapGranularity: 64 * 1024, // qcow2's default (its cluster size); measured for the main chunk size
  };
  const repos = {};
  try {
    for (const cs of chunkSizes) repos[sizeLabel(cs)] = await measureRepo(ctx, cs, cs === mainChunkSize);
  } finally {
    killAllSync();
  }

  const main = repos[sizeLabel(mainChunkSize)];
  const inc = main.incremental;
  const targets = [
    {
      key: 'restoreVsConvert',
      label: 'full restore vs qemu-img convert',
      ratio: main.restore.ratio,
      value: `${main.restore.ratio.toFixed(2)}x`,
      need: `>= ${TARGETS.restoreVsConvert}x`,
      met: main.restore.ratio >= TARGETS.restoreVsConvert,
    },
    ...(main.restic
      ? [
          { key: 'backupVsRestic', label: 'full backup vs restic backup (local)', ratio: main.restic.full.seconds / main.full.seconds, need: `>= ${TARGETS.vsRestic}x` },
          { key: 'restoreVsRestic', label: 'full restore vs restic restore (local)', ratio: main.restic.restore.seconds / main.restore.best.rebound.seconds, need: `>= ${TARGETS.vsRestic}x` },
        ].map((t) => ({ ...t, value: `${t.ratio.toFixed(2)}x`, met: t.ratio >= TARGETS.vsRestic }))
      : []),
    {
      key: 'warmRandVsNbdkit',
      label: 'warm-cache 4K random read vs nbdkit',
      ratio: main.warmRatio,
      value: `${main.warmRatio.toFixed(2)}x`,
      need: `>= ${TARGETS.warmRandVsNbdkit}x`,
      met: main.warmRatio >= TARGETS.warmRandVsNbdkit,
    },
    {
      key: 'incrementalReadsOnlyDirty',
      label: 'dirty-bitmap incremental reads only the dirty chunks',
      value: `${fmt(inc.readBytes / MiB, 1)} MiB read, ${inc.incremental?.dirtyChunks} dirty chunks (expected ${main.expectedDirty.chunks}) x ${sizeLabel(mainChunkSize)}`,
      need: 'read <= dirty chunks x chunk size, dirty chunks = chunks the writes touched',
      met: inc.incremental?.dirtyChunks === main.expectedDirty.chunks && inc.readBytes <= main.expectedDirty.bytes && main.incrementalMatchesChanged,
    },
  ];
  const out = {
    config: {
      size, mainChunkSize, chunkSizes, runtime, latRuntime, cacheSize, smallCache, seed,
      change: { percent: changePct, runBytes: changeRun, runs: changes.length, bytes: changes.length * changeRun },
      bitmapGranularity: main.bitmapGranularity ?? ctx.bitmapGranularity,
      cpus: os.cpus().length,
      node: process.version,
      versions: {
        rebound: `${firstLine(process.execPath, [REBOUND_MAIN, '--version'])}${gitHead() ? ` (commit ${gitHead()})` : ''}`,
        nbdkit: firstLine('nbdkit', ['--version']),
        'qemu-img': firstLine('qemu-img', ['--version']),
        nbdcopy: firstLine('nbdcopy', ['--version']),
        fio: firstLine('fio', ['--version']),
      },
      totalSeconds: (Date.now() - started) / 1000,
    },
    image: {
      mix: VM_IMAGE_MIX,
      bytesByClass,
      seconds: imageSeconds,
      commands: [
        `writeVmImage(base.raw, ${size}, {seed: ${seed}}) (lib.mjs)`,
        `cp --sparse=always base.raw changed.raw; ${changes.length} x ${changeRun}-byte writes of fresh data (2/3 text, 1/3 random)`,
        'qemu-img convert -f raw -O qcow2 base.raw vm.qcow2',
        `qemu-img bitmap --add vm.qcow2 ${BITMAP}; qemu-io -f qcow2 -c 'write -q -s FILE OFF LEN' ... vm.qcow2 (the same writes, 2000 per process)`,
      ],
    },
    repos,
    targets,
  };
  if (values.json) {
    console.log(JSON.stringify(out, (_k, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toFixed(3)) : v), 2));
  } else {
    console.log(report(out));
    console.log(`\nTotal time ${fmt(out.config.totalSeconds)} s.`);
  }
  clearTimeout(watchdog);
  return values.check && targets.some((x) => !x.met) ? 1 : 0;
}

main().then(
  (code) => {
    removeTmpSync();
    process.exit(code);
  },
  (err) => {
    process.stderr.write(`repo bench: ${err instanceof Error ? err.stack ?? err.message : err}\n`);
    process.exit(1);
  },
);
