#!/usr/bin/env node
/**
 * FUSE file-level restore benchmark. One run:
 *
 *   node tools/bench/fuse.mjs [--size 1G] [--rss-bytes 4G] [--cache-size 256M] [--files 4000] [--json] [--check]
 *   node tools/bench/fuse.mjs --quick           # 256 MiB disk, 1 GiB RSS read, 1000 files
 *
 * Needs root (loop mounts), /dev/fuse, nbdcopy, mke2fs, sfdisk. Steps:
 *   1. A fully allocated raw disk (lib.mjs writeImage) is backed up into a fresh repository
 *      (`rebound backup`) behind `rebound serve --fuse MNT --nbd-socket S` with the configured
 *      chunk cache (DATA/config.json cacheSize; smaller than the disk, so every pass reads chunks).
 *   2. Sequential read of the whole disk: `cat MNT/vms/vm/latest/disk0.raw > /dev/null` (the FUSE
 *      path) against `nbdcopy nbd+unix:///vm@latest/disk0?socket=S null:` (the same restore point
 *      over NBD, same daemon, same chunk cache), interleaved, best of --repeat each.
 *   3. Peak RSS of the daemon (VmRSS sampled every 50 ms from /proc/PID/status) while --rss-bytes
 *      are read through FUSE (the disk file read repeatedly; with a cache smaller than the disk every
 *      pass evicts the previous one, as one pass over a larger disk would).
 *   4. Small files: a GPT disk with one ext4 partition holding --files small files (1-16 KiB, 100
 *      per directory, made with `mke2fs -d`) is backed up; its partition file is loop-mounted
 *      read-only from the FUSE tree and `cp -r` copies the tree out. Reference: the same ext4 image
 *      loop-mounted from a local file. Both copies are checked with `diff -r`.
 * Targets (issue): FUSE sequential read >= 0.5x the NBD path; peak RSS <= cache size + 100 MiB.
 * Everything (daemon, mounts, loop devices, temp dir) is cleaned up on success, failure and Ctrl-C.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  cpuSeconds, fmt, killAllSync, log, MiB, pathFlags, REBOUND_MAIN, removeTmpSync, ROOT, run, setTmpDir, startServer, stopServer, table, waitNbd, which, writeImage,
  useDaemonToken,
} from './lib.mjs';

const TARGETS = { seqReadVsNbd: 0.5, rssOverCacheMiB: 100 };
const USAGE = `usage: node tools/bench/fuse.mjs [options]
  --size SIZE        disk size for the sequential read (default 1G)
  --rss-bytes SIZE   bytes read through FUSE while sampling the daemon's RSS (default 4G)
  --cache-size SIZE  the daemon's chunk cache (default 256M, the daemon's default; 64M with --quick);
                     keep it below --size so every pass reads and decompresses chunks
  --files N          small files in the cp -r test (default 4000)
  --repeat N         sequential reads per path, best counts (default 2)
  --quick            256M disk, 64M cache, 1G RSS read, 1000 files, repeat 1 (explicit options win)
  --json             print the results as JSON
  --check            exit 1 when a target is missed
  --tmpdir DIR       parent of the temp dir (default ${os.tmpdir()})
  -h, --help`;

// Mounts made by this run, undone at exit whatever happens (lazy: nothing may hang the exit).
const mounts = [];
function unmountAllSync() {
  for (const m of mounts.splice(0).reverse()) spawnSync(m.fuse ? 'fusermount' : 'umount', m.fuse ? ['-uz', m.dir] : ['-l', m.dir], { stdio: 'ignore', timeout: 10_000 });
}
// Before lib.mjs's exit handler removes the temp dir (it must never recurse into a mount).
process.prependListener('exit', unmountAllSync);

async function loopMount(file, dir) {
  fs.mkdirSync(dir, { recursive: true });
  await run('mount', ['-t', 'ext4', '-o', 'loop,ro', file, dir], { timeoutMs: 60_000 });
  mounts.push({ dir });
}
async function loopUmount(dir) {
  await run('umount', [dir], { timeoutMs: 60_000 });
  mounts.splice(mounts.findIndex((m) => m.dir === dir), 1);
}

async function catToNull(file, timeoutMs) {
  const devNull = fs.openSync('/dev/null', 'w');
  try {
    return (await run('cat', [file], { stdout: devNull, timeoutMs })).seconds;
  } finally {
    fs.closeSync(devNull);
  }
}

function rssBytes(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

async function rebound(daemon, args, timeoutMs = 600_000) {
  const r = await run(process.execPath, [REBOUND_MAIN, '--server', daemon.http, ...args], { timeoutMs });
  return r.stdout;
}

/** Writes `count` small files (1-16 KiB, text and binary) in directories of 100. */
function writeSmallFiles(dir, count) {
  let bytes = 0;
  let x = 0x12345678;
  for (let i = 0; i < count; i++) {
    const d = path.join(dir, `d${String(Math.floor(i / 100)).padStart(3, '0')}`);
    if (i % 100 === 0) fs.mkdirSync(d, { recursive: true });
    const len = 1024 + ((i * 7919) % (15 * 1024));
    const buf = Buffer.alloc(len);
    for (let p = 0; p + 4 <= len; p += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf.writeUInt32LE(i % 3 === 0 ? x >>> 0 : 0x20202020 + (p % 26), p);
    }
    fs.writeFileSync(path.join(d, `file${i}.dat`), buf);
    bytes += len;
  }
  return bytes;
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string' },
      'rss-bytes': { type: 'string' },
      'cache-size': { type: 'string' },
      files: { type: 'string' },
      repeat: { type: 'string' },
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      tmpdir: { type: 'string', default: os.tmpdir() },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!fs.existsSync(REBOUND_MAIN)) throw new Error(`${REBOUND_MAIN} is missing: run 'npm run build' first`);
  if (process.getuid?.() !== 0) throw new Error('the benchmark loop-mounts filesystems: run it as root');
  if (!fs.existsSync('/dev/fuse')) throw new Error('/dev/fuse is missing');
  for (const tool of ['nbdcopy', 'nbdinfo', 'mke2fs', 'sfdisk', 'mount', 'umount', 'fusermount', 'cp', 'diff', 'cat']) {
    if (!which(tool)) throw new Error(`${tool} is not installed (tools/setup.sh installs it)`);
  }
  const { parseSize } = await import(path.join(ROOT, 'dist/util/size.js'));
  const q = values.quick;
  const size = parseSize(values.size ?? (q ? '256M' : '1G'));
  const rssTarget = parseSize(values['rss-bytes'] ?? (q ? '1G' : '4G'));
  const cacheSize = parseSize(values['cache-size'] ?? (q ? '64M' : '256M'));
  const files = Number(values.files ?? (q ? 1000 : 4000));
  const repeat = Number(values.repeat ?? (q ? 1 : 2));
  if (size < 16 * MiB || size % (4 * MiB) !== 0) throw new Error('--size must be at least 16M and a multiple of 4M');
  if (cacheSize >= size) log('note: the chunk cache holds the whole disk, so repeated reads are served from it (use --cache-size below --size)');

  const watchdog = setTimeout(() => {
    log('run exceeded its time limit; aborting');
    process.exit(3);
  }, (900 + size / (2 * MiB) + rssTarget / (5 * MiB)) * 1000);
  const tmpDir = fs.mkdtempSync(path.join(values.tmpdir, 'rebound-bench-fuse-'));
  setTmpDir(tmpDir);
  const dataDir = path.join(tmpDir, 'data');
  const mnt = path.join(tmpDir, 'mnt');
  const sock = path.join(tmpDir, 'r.sock');
  fs.mkdirSync(dataDir);
  fs.writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ cacheSize }) + '\n');
  const started = Date.now();
  const R = { config: { size, rssTarget, cacheSize, files, repeat, cpus: os.cpus().length, node: process.version } };

  log(`writing a fully allocated ${fmt(size / MiB)} MiB disk`);
  const img = path.join(tmpDir, 'disk.raw');
  writeImage(img, size);

  const args = [REBOUND_MAIN, 'serve', '--data', dataDir, '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', '--fuse', mnt, ...pathFlags()];
  // The daemon runs with the malloc settings bin/rebound gives it (see there).
  process.env.MALLOC_ARENA_MAX ??= '2';
  process.env.MALLOC_MMAP_THRESHOLD_ ??= '131072';
  let starts = 0;
  const start = async () => {
    const d = await startServer({
      name: 'rebound', logName: `rebound-${++starts}`, cmd: process.execPath, args, sock, uri: `nbd+unix:///vm@latest/disk0?socket=${encodeURIComponent(sock)}`, dir: tmpDir,
      ready: (_s, text) => /HTTP API: (http:\/\/[^/\s]+)\//.exec(text)?.[1],
    });
    mounts.push({ dir: mnt, fuse: true });
    d.http = d.ready;
    useDaemonToken(dataDir);
    return d;
  };
  const stop = async (d) => {
    await stopServer(d); // SIGTERM: the daemon unmounts its tree
    mounts.splice(mounts.findIndex((m) => m.dir === mnt), 1);
  };
  let daemon = await start();
  R.daemonCommand = daemon.commandLine;
  try {
    log('backing up the disk');
    const job = JSON.parse(await rebound(daemon, ['backup', 'vm', '--disk', `disk0=${img}`, '--json']));
    R.backupSeconds = job.result.durationMs / 1000;
    fs.rmSync(img);
    // Reads start in a fresh daemon: an empty chunk cache, and no memory left over from the backup.
    await stop(daemon);
    daemon = await start();
    await waitNbd(daemon.uri);
    const file = path.join(mnt, 'vms/vm/latest/disk0.raw');
    if (fs.statSync(file).size !== size) throw new Error(`${file} has the wrong size`);

    // 2. Sequential read, interleaved.
    const fuseRuns = [];
    const nbdRuns = [];
    for (let i = 0; i < repeat; i++) {
      log(`sequential read ${i + 1}/${repeat}: nbdcopy, then cat through FUSE`);
      let cpu0 = cpuSeconds(daemon.pid);
      const n = await run('nbdcopy', [daemon.uri, 'null:'], { timeoutMs: 60_000 + size / MiB * 1000 });
      nbdRuns.push({ seconds: n.seconds, mibps: size / MiB / n.seconds, cpuSecPerGiB: (cpuSeconds(daemon.pid) - cpu0) / (size / 2 ** 30) });
      cpu0 = cpuSeconds(daemon.pid);
      const s = await catToNull(file, 60_000 + size / MiB * 1000);
      fuseRuns.push({ seconds: s, mibps: size / MiB / s, cpuSecPerGiB: (cpuSeconds(daemon.pid) - cpu0) / (size / 2 ** 30) });
    }
    const best = (runs) => runs.reduce((a, b) => (b.mibps > a.mibps ? b : a));
    R.seq = { fuse: best(fuseRuns), nbd: best(nbdRuns), fuseRuns, nbdRuns, commands: [`cat ${file} > /dev/null`, `nbdcopy ${daemon.uri} null:`] };
    R.seq.ratio = R.seq.fuse.mibps / R.seq.nbd.mibps;
    log(`  FUSE ${fmt(R.seq.fuse.mibps)} MiB/s, NBD ${fmt(R.seq.nbd.mibps)} MiB/s, ratio ${R.seq.ratio.toFixed(2)}`);

    // 3. Peak RSS while reading rssTarget bytes through FUSE, in a fresh daemon; the same through
    //    NBD (nbdcopy) in another fresh daemon, for reference.
    const peakRss = async (what, readOnce) => {
      await stop(daemon);
      daemon = await start();
      await waitNbd(daemon.uri);
      log(`reading ${fmt(rssTarget / MiB)} MiB through ${what}, sampling the daemon's RSS`);
      let peak = rssBytes(daemon.pid);
      const before = peak;
      const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(daemon.pid))), 50);
      const t0 = Date.now();
      let read = 0;
      try {
        while (read < rssTarget) {
          await readOnce();
          read += size;
        }
      } finally {
        clearInterval(sampler);
      }
      peak = Math.max(peak, rssBytes(daemon.pid));
      const r = { bytesRead: read, seconds: (Date.now() - t0) / 1000, beforeMiB: before / MiB, peakMiB: peak / MiB, limitMiB: cacheSize / MiB + TARGETS.rssOverCacheMiB };
      log(`  peak RSS ${fmt(r.peakMiB)} MiB (before ${fmt(r.beforeMiB)} MiB; limit ${fmt(r.limitMiB)} MiB)`);
      return r;
    };
    R.rss = await peakRss('FUSE', () => catToNull(file, 60_000 + size / MiB * 1000));
    R.rssNbd = await peakRss('NBD', () => run('nbdcopy', [daemon.uri, 'null:'], { timeoutMs: 60_000 + size / MiB * 1000 }));

    // 4. Small files out of a loop-mounted partition.
    log(`small files: ${files} files into an ext4 partition`);
    const tree = path.join(tmpDir, 'tree');
    const treeBytes = writeSmallFiles(tree, files);
    const fsBytes = Math.max(64 * MiB, Math.ceil((treeBytes * 2.5 + files * 8192) / MiB) * MiB);
    const part = path.join(tmpDir, 'part.ext4');
    fs.writeFileSync(part, '');
    fs.truncateSync(part, fsBytes);
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, part], { timeoutMs: 300_000 });
    const disk = path.join(tmpDir, 'files.raw');
    fs.writeFileSync(disk, '');
    fs.truncateSync(disk, fsBytes + 2 * MiB);
    // lib.mjs run() gives no stdin: the sfdisk script goes through a file.
    const script = path.join(tmpDir, 'sfdisk.txt');
    fs.writeFileSync(script, `label: gpt\nstart=2048, size=${fsBytes / 512}, type=linux\n`);
    await run('sh', ['-c', 'sfdisk -q "$0" < "$1"', disk, script], { timeoutMs: 60_000 });
    const fd = fs.openSync(disk, 'r+');
    fs.writeSync(fd, fs.readFileSync(part), 0, fsBytes, 2048 * 512);
    fs.closeSync(fd);
    await rebound(daemon, ['backup', 'files', '--disk', `disk0=${disk}`, '--json']);
    fs.rmSync(disk);
    const copy = async (source, label) => {
      const at = path.join(tmpDir, `loop-${label}`);
      const out = path.join(tmpDir, `out-${label}`);
      await loopMount(source, at);
      try {
        const { seconds } = await run('cp', ['-r', path.join(at, '.'), out], { timeoutMs: 600_000 });
        await run('diff', ['-r', '-x', 'lost+found', tree, out], { timeoutMs: 300_000 });
        return { seconds, filesPerSec: files / seconds, mibps: treeBytes / MiB / seconds };
      } finally {
        await loopUmount(at);
        fs.rmSync(out, { recursive: true, force: true });
      }
    };
    R.smallFiles = { files, bytes: treeBytes, fsBytes };
    R.smallFiles.fuse = await copy(path.join(mnt, 'vms/files/latest/disk0.parts/1'), 'fuse');
    R.smallFiles.local = await copy(part, 'local');
    R.smallFiles.ratio = R.smallFiles.fuse.filesPerSec / R.smallFiles.local.filesPerSec;
    log(`  cp -r: FUSE ${fmt(R.smallFiles.fuse.seconds, 2)} s, local image ${fmt(R.smallFiles.local.seconds, 2)} s`);
  } finally {
    await stop(daemon);
    unmountAllSync();
    killAllSync();
  }
  R.config.totalSeconds = (Date.now() - started) / 1000;
  R.targets = [
    { label: 'FUSE sequential read vs NBD (nbdcopy)', value: `${R.seq.ratio.toFixed(2)}x`, need: `>= ${TARGETS.seqReadVsNbd}x`, met: R.seq.ratio >= TARGETS.seqReadVsNbd },
    { label: `peak daemon RSS reading ${fmt(R.rss.bytesRead / MiB)} MiB`, value: `${fmt(R.rss.peakMiB)} MiB`, need: `<= ${fmt(R.rss.limitMiB)} MiB`, met: R.rss.peakMiB <= R.rss.limitMiB },
  ];
  if (values.json) console.log(JSON.stringify(R, null, 2));
  else console.log(report(R));
  clearTimeout(watchdog);
  return values.check && R.targets.some((t) => !t.met) ? 1 : 0;
}

function report(R) {
  const c = R.config;
  const lines = [
    `rebound FUSE benchmark: ${fmt(c.size / MiB)} MiB disk, chunk cache ${fmt(c.cacheSize / MiB)} MiB, ${c.cpus} CPUs, node ${c.node}`,
    `daemon: ${R.daemonCommand}`,
    '',
    table([
      ['sequential read of the whole disk', 'MiB/s', 'daemon CPU s/GiB', 'runs (MiB/s)'],
      ['FUSE: cat disk0.raw', fmt(R.seq.fuse.mibps), fmt(R.seq.fuse.cpuSecPerGiB, 2), R.seq.fuseRuns.map((r) => fmt(r.mibps)).join(', ')],
      ['NBD: nbdcopy vm@latest/disk0', fmt(R.seq.nbd.mibps), fmt(R.seq.nbd.cpuSecPerGiB, 2), R.seq.nbdRuns.map((r) => fmt(r.mibps)).join(', ')],
      ['ratio FUSE / NBD', R.seq.ratio.toFixed(2), '', ''],
    ]),
    '',
    `peak daemon RSS while reading ${fmt(R.rss.bytesRead / MiB)} MiB through FUSE: ${fmt(R.rss.peakMiB)} MiB ` +
      `(fresh daemon: ${fmt(R.rss.beforeMiB)} MiB, growth ${fmt(R.rss.peakMiB - R.rss.beforeMiB)} MiB; limit cache + 100 MiB = ${fmt(R.rss.limitMiB)} MiB; ${fmt(R.rss.bytesRead / MiB / R.rss.seconds)} MiB/s)`,
    `  the same through NBD (nbdcopy), for reference: ${fmt(R.rssNbd.peakMiB)} MiB (fresh daemon: ${fmt(R.rssNbd.beforeMiB)} MiB, growth ${fmt(R.rssNbd.peakMiB - R.rssNbd.beforeMiB)} MiB)`,
    '',
    table([
      [`cp -r of ${R.smallFiles.files} small files (${fmt(R.smallFiles.bytes / MiB, 1)} MiB)`, 'seconds', 'files/s', 'MiB/s'],
      ['loop mount of the FUSE partition file', fmt(R.smallFiles.fuse.seconds, 2), fmt(R.smallFiles.fuse.filesPerSec), fmt(R.smallFiles.fuse.mibps, 1)],
      ['loop mount of the local ext4 image', fmt(R.smallFiles.local.seconds, 2), fmt(R.smallFiles.local.filesPerSec), fmt(R.smallFiles.local.mibps, 1)],
      ['ratio FUSE / local', R.smallFiles.ratio.toFixed(2), '', ''],
    ]),
    '',
    'Targets:',
    ...R.targets.map((t) => `  ${t.met ? 'met   ' : 'MISSED'} ${t.label}: ${t.value} (need ${t.need})`),
    '',
    `Total time ${fmt(c.totalSeconds)} s.`,
  ];
  return lines.join('\n');
}

main().then(
  (code) => {
    removeTmpSync();
    process.exit(code);
  },
  (err) => {
    process.stderr.write(`fuse bench: ${err instanceof Error ? err.stack ?? err.message : err}\n`);
    unmountAllSync();
    process.exit(1);
  },
);
