/**
 * Shared pieces of the benchmarks in tools/bench: process bookkeeping and cleanup (every child is
 * killed and the temp dir removed on exit, error and Ctrl-C), a bounded `run`, server start-up on a
 * Unix socket with a readiness probe, fio measurements with the server's CPU time, and tables.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const REBOUND_MAIN = path.join(ROOT, 'dist/cli/main.js');
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

// ---- cleanup --------------------------------------------------------------------------------

/** Every child we started and have not yet seen exit. */
export const children = new Set();
let tmpDir;

/** The temp dir removed at exit. */
export function setTmpDir(dir) {
  tmpDir = dir;
}

/**
 * `serve` flags that let the benchmark's daemon back up from and restore or migrate into its temp
 * dir (paths in API requests are policy: docs/security.md).
 */
export function pathFlags(dir = tmpDir) {
  if (!dir) throw new Error('pathFlags: no temp dir set');
  return ['--source-dir', dir, '--target-dir', dir];
}

export function killAllSync() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

export function removeTmpSync() {
  if (tmpDir) {
    fs.rmSync(tmpDir, { recursive: true, force: true });
    tmpDir = undefined;
  }
}

process.on('exit', () => {
  killAllSync();
  removeTmpSync();
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    process.stderr.write(`\n${sig}: cleaning up\n`);
    process.exit(130);
  });
}

// ---- helpers --------------------------------------------------------------------------------

export function log(msg) {
  process.stderr.write(`[bench] ${msg}\n`);
}

export function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

export function firstLine(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  return (r.stdout || r.stderr || '').split('\n')[0].trim();
}

/** Runs a command to completion; rejects on a non-zero exit or when it outlives timeoutMs. */
export function run(cmd, args, { timeoutMs, stdout = 'pipe' } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', stdout, 'pipe'] });
    children.add(child);
    let out = '';
    let err = '';
    child.stdout?.setEncoding('utf8').on('data', (d) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      children.delete(child);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (timedOut) return reject(new Error(`${cmd} timed out after ${timeoutMs / 1000} s\n${err.slice(-2000)}`));
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? code})\n${err.slice(-2000)}`));
      resolve({ stdout: out, stderr: err, seconds });
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const CLK_TCK = Number(firstLine('getconf', ['CLK_TCK'])) || 100;

/** User+system CPU seconds of a process (all its threads), or NaN when unavailable. */
export function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14, 15)
  } catch {
    return NaN;
  }
}

/**
 * Puts the machine in the same state before each timed copy: `sync` (no writeback of an earlier step
 * competes), then `bytes` of page cache written to a scratch file in `dir` and freed again.
 *
 * Why the scratch write: a virtual machine with free page reporting (Firecracker, virtio-balloon)
 * hands memory that stays free for a few seconds back to its host, and the next program to touch it
 * pays the host's page faults inside its own copies. Measured here: two threads writing 1 GiB into
 * the page cache took 4.8 s and 7.3 CPU-s on returned memory, 0.4 s and 0.7 CPU-s otherwise; in a
 * benchmark, whichever side ran first after an idle step paid it (restore 0.25x qemu-img convert,
 * then convert 0.3x after it when the order changed). The scratch write pays that cost before the clock
 * starts and leaves the memory freed just now, which the page allocator hands out first.
 */
export async function settleBeforeTimedCopy(dir, bytes) {
  await run('sync', [], { timeoutMs: 120_000 });
  const file = path.join(dir, `.settle-${process.pid}`);
  const fd = fs.openSync(file, 'w');
  try {
    const block = Buffer.alloc(4 * MiB, 0x5a);
    for (let off = 0; off < bytes; off += block.length) fs.writeSync(fd, block, 0, Math.min(block.length, bytes - off), off);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}

// ---- images ---------------------------------------------------------------------------------

const TEXT = Buffer.from(
  Array.from({ length: 200 }, (_, i) =>
    `2026-01-${String((i % 28) + 1).padStart(2, '0')}T12:${String(i % 60).padStart(2, '0')}:00Z host${i % 7} ` +
    `kernel: [${(i * 7919) % 100000}.${i % 1000}] eth0: link up, 1000 Mbps, full duplex, lpa 0x${(i * 2654435761 >>> 0).toString(16)}\n`,
  ).join(''),
);

/**
 * Writes a fully allocated image: a 4 MiB template (3/4 xorshift random, 1/4 log text, in 64 KiB
 * pieces), each copy stamped with its block and sector number so no two 4 KiB sectors are equal.
 */
export function writeImage(file, size) {
  const BLOCK = 4 * MiB;
  const tmpl = Buffer.allocUnsafe(BLOCK);
  const words = new Uint32Array(tmpl.buffer, tmpl.byteOffset, BLOCK / 4);
  let x = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let off = 0; off < BLOCK; off += 64 * 1024) {
    if ((off / (64 * 1024)) % 4 === 3) {
      for (let p = off; p < off + 64 * 1024; p += TEXT.length) TEXT.copy(tmpl, p, 0, Math.min(TEXT.length, off + 64 * 1024 - p));
    }
  }
  const fd = fs.openSync(file, 'w');
  try {
    for (let pos = 0, block = 0; pos < size; pos += BLOCK, block++) {
      for (let s = 0; s < BLOCK; s += 4096) {
        tmpl.writeUInt32LE(block, s);
        tmpl.writeUInt32LE(s >>> 12, s + 4);
      }
      const n = Math.min(BLOCK, size - pos);
      let done = 0;
      while (done < n) done += fs.writeSync(fd, tmpl, done, n - done, pos + done);
    }
    fs.fsyncSync(fd); // no writeback of a GiB of dirty pages during the measurements
  } finally {
    fs.closeSync(fd);
  }
  const st = fs.statSync(file);
  if (st.blocks * 512 < size) throw new Error(`image is sparse (${st.blocks * 512} of ${size} bytes allocated)`);
}

/** Reads a file once so the page cache holds it (every server then starts from the same state). */
export async function warmPageCache(file, { timeoutMs = 120_000 } = {}) {
  const devNull = fs.openSync('/dev/null', 'w');
  try {
    return (await run('cat', [file], { stdout: devNull, timeoutMs })).seconds;
  } finally {
    fs.closeSync(devNull);
  }
}

/** Files under `dir` (recursively): count, apparent bytes and bytes allocated on disk. */
export function dirUsage(dir) {
  let files = 0;
  let bytes = 0;
  let allocated = 0;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const st = fs.statSync(p);
        files++;
        bytes += st.size;
        allocated += st.blocks * 512;
      }
    }
  };
  walk(dir);
  return { files, bytes, allocated };
}

/** A small seeded PRNG (xorshift32): the same seed gives the same images and changes on every run. */
export function makeRng(seed = 0x2545f491) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>>= 0);
  };
  return {
    next,
    /** [0, 1) */
    float: () => next() / 4294967296,
    /** integer in [0, n) */
    int: (n) => Math.floor((next() / 4294967296) * n),
    /** Fills `buf` with pseudo-random bytes (fast: 4 bytes per step). */
    fill(buf) {
      const n = buf.length >>> 2;
      const words = buf.byteOffset % 4 === 0 ? new Uint32Array(buf.buffer, buf.byteOffset, n) : undefined;
      if (words) for (let i = 0; i < n; i++) words[i] = next();
      else for (let i = 0; i < n; i++) buf.writeUInt32LE(next(), i * 4);
      for (let i = n * 4; i < buf.length; i++) buf[i] = next() & 0xff;
      return buf;
    },
  };
}

/** ~1 MiB of varied text: syslog lines, JSON and INI configuration, source code (compresses ~3-5x). */
function textCorpus(rng) {
  const words = ['systemd', 'nginx', 'postgres', 'sshd', 'kernel', 'cron', 'dockerd', 'app', 'worker', 'redis', 'session', 'request',
    'connection', 'timeout', 'started', 'stopped', 'accepted', 'user', 'disk', 'eth0', 'cache', 'index', 'table', 'query', 'GET', 'POST'];
  const w = () => words[rng.int(words.length)];
  const lines = [];
  let len = 0;
  while (len < MiB + 8192) {
    let line;
    switch (rng.int(5)) {
      case 0:
        line = `2026-0${1 + rng.int(9)}-${String(1 + rng.int(28)).padStart(2, '0')}T${String(rng.int(24)).padStart(2, '0')}:${String(rng.int(60)).padStart(2, '0')}:${String(rng.int(60)).padStart(2, '0')}Z host${rng.int(9)} ${w()}[${rng.int(65536)}]: ${w()} ${w()} from 10.${rng.int(256)}.${rng.int(256)}.${rng.int(256)} port ${rng.int(65536)}`;
        break;
      case 1:
        line = `  {"id": ${rng.int(1e6)}, "${w()}": "${w()}-${rng.int(1e4)}", "enabled": ${rng.int(2) ? 'true' : 'false'}, "weight": ${(rng.float() * 100).toFixed(2)}},`;
        break;
      case 2:
        line = `${w()}_${w()} = ${rng.int(2) ? rng.int(100000) : `"/var/lib/${w()}/${w()}"`}`;
        break;
      case 3:
        line = `    if (${w()}.${w()}(${rng.int(100)}) != NULL) { ${w()}_${w()}(ctx, ${rng.int(4096)}); return -E${w().toUpperCase()}; }`;
        break;
      default:
        line = `${w()} ${w()} ${w()} ${w()} ${rng.int(1e9).toString(16)} ${w()} ${w()}.`;
    }
    lines.push(line);
    len += line.length + 1;
  }
  return Buffer.from(lines.join('\n') + '\n');
}

/**
 * ~1 MiB of structured binary data: 64-byte records (ids, counters, timestamps, low-entropy
 * fields, names from a small dictionary, padding), like database pages or program data (~2x).
 */
function structCorpus(rng) {
  const names = Array.from({ length: 64 }, (_, i) => Buffer.from(`obj_${i.toString(36)}_${'abcdefghijklmnop'.slice(0, 4 + (i % 12))}`));
  const buf = Buffer.alloc(MiB + 8192);
  for (let off = 0, r = rng.int(1e6); off + 64 <= buf.length; off += 64, r++) {
    buf.writeUInt32LE(r, off);
    buf.writeUInt32LE(rng.int(1000), off + 4);
    buf.writeUInt32LE(1_700_000_000 + r * 17, off + 8);
    buf.writeUInt32LE(rng.next() & 0x0f0f0f0f, off + 12);
    buf.writeUInt32LE(rng.next() & 0x00ff00ff, off + 16);
    buf.writeUInt32LE(rng.next(), off + 20);
    names[rng.int(names.length)].copy(buf, off + 24, 0, 24);
  }
  return buf;
}

export const VM_IMAGE_MIX = { zero: 0.2, text: 0.25, struct: 0.25, random: 0.22, dup: 0.08 };

/**
 * Writes a sparse raw image laid out like a used VM disk: extents of 16 KiB to 4 MiB (log-uniform,
 * 4 KiB-aligned) of
 *   zero    never written (holes),
 *   text    logs, configuration and source code (compressible),
 *   struct  binary records (database pages, program data; partly compressible),
 *   random  incompressible (compressed archives, media, encrypted data),
 *   dup     a copy of earlier data at the same offset modulo 64 KiB (files stored twice; found by
 *           fixed-size chunking only where the copies line up with the chunk grid),
 * in proportions `mix` (default VM_IMAGE_MIX, by bytes on average). Every non-zero 4 KiB sector
 * outside dup extents is distinct (stamped with its offset). Deterministic for a seed.
 * Returns the bytes per class.
 */
export function writeVmImage(file, size, { seed = 1, mix = VM_IMAGE_MIX } = {}) {
  const S = 4096;
  if (size % S !== 0) throw new Error('image size must be a multiple of 4 KiB');
  const rng = makeRng(seed);
  const text = textCorpus(rng);
  const struct = structCorpus(rng);
  const classes = Object.keys(mix);
  const total = classes.reduce((a, c) => a + mix[c], 0);
  const pick = () => {
    let r = rng.float() * total;
    for (const c of classes) if ((r -= mix[c]) < 0) return c;
    return classes[classes.length - 1];
  };
  const bytes = Object.fromEntries(classes.map((c) => [c, 0]));
  const MAX = 4 * MiB;
  const buf = Buffer.allocUnsafe(MAX);
  const fd = fs.openSync(file, 'w+');
  try {
    fs.ftruncateSync(fd, size);
    for (let off = 0; off < size; ) {
      const len = Math.min(size - off, S * Math.round(Math.exp(Math.log(4) + rng.float() * Math.log(256))));
      let cls = pick();
      const G = 64 * 1024;
      if (cls === 'dup' && off - len - (off % G) < 0) cls = 'text';
      const b = buf.subarray(0, len);
      if (cls === 'zero') {
        bytes.zero += len;
        off += len;
        continue;
      }
      if (cls === 'dup') {
        // Same position within a 64 KiB granule as the target; entirely before it.
        const src = rng.int(Math.floor((off - len - (off % G)) / G) + 1) * G + (off % G);
        let done = 0;
        while (done < len) done += fs.readSync(fd, b, done, len - done, src + done);
      } else {
        for (let s = 0; s < len; s += S) {
          const sec = b.subarray(s, s + S);
          if (cls === 'random') rng.fill(sec);
          else {
            const corpus = cls === 'text' ? text : struct;
            const start = rng.int(corpus.length - S) & ~63;
            corpus.copy(sec, 0, start, start + S);
            if (cls === 'text') sec.write(`#${((off + s) / S).toString(16).padStart(14, '0')}\n`, 0, 'latin1');
            else sec.writeBigUInt64LE(BigInt(off + s) | (1n << 62n), 0);
          }
        }
      }
      let done = 0;
      while (done < len) done += fs.writeSync(fd, b, done, len - done, off + done);
      bytes[cls] += len;
      off += len;
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return bytes;
}

// ---- servers -------------------------------------------------------------------------------

/**
 * Starts a server that listens on `sock` and waits until it is ready: by default until
 * `nbdinfo --size uri` answers; with `ready`, until `await ready(server, logText)` is truthy (for
 * servers that have no export yet, e.g. a daemon that prints its HTTP address; the value is kept
 * as `server.ready`). The server's stdout and stderr go to DIR/NAME.log (`logName` overrides NAME).
 * Resolves with { name, child, pid, sock, uri, logFile, commandLine, exportSize, canMultiConn, ready }.
 */
export async function startServer({ name, cmd, args, sock, uri, dir, ready, logName = name, timeoutMs = 30_000 }) {
  const logFile = path.join(dir, `${logName}.log`);
  const logFd = fs.openSync(logFile, 'w');
  const child = spawn(cmd, args, { stdio: ['ignore', logFd, logFd], env: process.env });
  fs.closeSync(logFd);
  children.add(child);
  let exited;
  child.on('exit', (code, signal) => {
    exited = signal ?? code;
    children.delete(child);
  });
  child.on('error', (e) => (exited = e.message));
  const server = { name, child, pid: child.pid, sock, uri, logFile, commandLine: [cmd, ...args].join(' ') };
  const logText = () => fs.readFileSync(logFile, 'utf8');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited !== undefined) throw new Error(`${name} exited (${exited}) before serving:\n${logText().slice(-2000)}`);
    if (ready) {
      const v = await ready(server, logText());
      if (v) {
        server.ready = v;
        return server;
      }
    } else if (fs.existsSync(sock)) {
      try {
        const r = await run('nbdinfo', ['--size', server.uri], { timeoutMs: 5_000 });
        server.exportSize = Number(r.stdout.trim());
        break;
      } catch {
        // not ready yet
      }
    }
    if (Date.now() > deadline) throw new Error(`${name} did not become ready within ${timeoutMs / 1000} s:\n${logText().slice(-2000)}`);
    await sleep(100);
  }
  const info = await run('nbdinfo', [server.uri], { timeoutMs: 10_000 });
  server.canMultiConn = /can_multi_conn:\s*true/.test(info.stdout);
  return server;
}

/** Waits until `nbdinfo --size uri` answers (e.g. an export that appears later); resolves with the size. */
export async function waitNbd(uri, { timeoutMs = 30_000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await run('nbdinfo', ['--size', uri], { timeoutMs: 5_000 });
      return Number(r.stdout.trim());
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${uri} did not answer within ${timeoutMs / 1000} s: ${err.message}`);
    }
    await sleep(100);
  }
}

export async function stopServer(server) {
  const { child } = server;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(timer);
}

// ---- measurements ---------------------------------------------------------------------------

/** Runs one fio job over NBD; `dir` is 'read' or 'write' (which side of fio's report to use). */
export async function measureFio(server, { name, rw, bs, iodepth, runtime, extra = [], dir = 'read' }) {
  const args = [
    `--name=${name}`,
    '--ioengine=nbd',
    `--uri=${server.uri}`,
    `--rw=${rw}`,
    `--bs=${bs}`,
    `--iodepth=${iodepth}`,
    `--runtime=${runtime}`,
    '--time_based',
    '--output-format=json',
    ...extra,
  ];
  const cpu0 = cpuSeconds(server.pid);
  const r = await run('fio', args, { timeoutMs: (runtime + 60) * 1000 });
  const cpu = cpuSeconds(server.pid) - cpu0;
  const json = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')));
  const job = json.jobs[0];
  if (job.error !== 0) throw new Error(`fio ${name} against ${server.name}: error ${job.error}`);
  const rd = job[dir];
  if (!(rd.total_ios > 0)) throw new Error(`fio ${name} against ${server.name}: no I/O completed`);
  const pct = rd.clat_ns?.percentile ?? {};
  return {
    iops: rd.iops,
    mibps: rd.bw_bytes / MiB,
    totalIos: rd.total_ios,
    clatP50Us: (pct['50.000000'] ?? NaN) / 1000,
    clatP99Us: (pct['99.000000'] ?? NaN) / 1000,
    clatMaxUs: (rd.clat_ns?.max ?? NaN) / 1000,
    clatMeanUs: (rd.clat_ns?.mean ?? NaN) / 1000,
    clientCpuPct: job.usr_cpu + job.sys_cpu,
    serverCpuPct: (100 * cpu) / (job.elapsed || runtime),
    serverCpuUsPerIo: (1e6 * cpu) / rd.total_ios,
    command: ['fio', ...args].join(' '),
  };
}

/**
 * Copies a whole export to `null:` with nbdcopy (its defaults: multi-conn, 256 KiB requests).
 * `server` is { uri, pid } (pid for the server's CPU time, optional).
 */
export async function measureNbdcopy(server, size, { timeoutMs = 60_000 + (size / (20 * MiB)) * 1000 } = {}) {
  const cpu0 = server.pid ? cpuSeconds(server.pid) : NaN;
  const { seconds } = await run('nbdcopy', [server.uri, 'null:'], { timeoutMs });
  const cpu = server.pid ? cpuSeconds(server.pid) - cpu0 : NaN;
  return { seconds, mibps: size / MiB / seconds, serverCpuSecPerGiB: cpu / (size / GiB), command: `nbdcopy ${server.uri} null:` };
}

/**
 * Measures every server the same way, round after round: one untimed warm-up round (unless
 * `warmup` is false), then `rounds` rounds, each running `measure(server)` against every server in
 * turn, so slow drift on the machine hits all of them alike. Resolves to { name: { runs, best,
 * median } }, best and median by `score` (higher is better). `describe(result)` makes the log line.
 *
 * Why a warm-up round: on this project's 2-core VM a server's first copy after it started (or after
 * an idle step) runs at half speed or less, for every server alike but by different amounts: the
 * client's and server's buffers are first touched then, and memory the VM handed back to its host
 * (free page reporting) costs a host page fault per page (tools/bench/README.md). A daemon that
 * serves recovered VMs is warm; the warm-up measures that state. Why several rounds: one run of
 * nbdcopy or fio on this machine varies by 10-25 % from the next, more than the gaps measured.
 */
export async function roundRobin(servers, { label, rounds, warmup = true, measure, score, describe }) {
  const results = Object.fromEntries(servers.map((s) => [s.name, { runs: [] }]));
  for (let round = warmup ? 0 : 1; round <= rounds; round++) {
    for (const s of servers) {
      log(`${label} ${round === 0 ? 'warm-up' : `#${round}`} ${s.name}`);
      const r = await measure(s);
      log(`  ${describe(r)}`);
      if (round > 0) results[s.name].runs.push(r);
    }
  }
  for (const entry of Object.values(results)) {
    const sorted = [...entry.runs].sort((a, b) => score(b) - score(a));
    entry.best = sorted[0];
    entry.median = sorted[Math.floor(sorted.length / 2)]; // of an even count, the lower of the middle two
  }
  return results;
}

// ---- output ---------------------------------------------------------------------------------

export function fmt(v, digits = 0) {
  if (v === undefined || Number.isNaN(v)) return 'n/a';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  return rows
    .map((r, i) => {
      const line = r.map((cell, c) => (c === 0 ? String(cell).padEnd(widths[c]) : String(cell).padStart(widths[c]))).join('  ');
      return i === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('  ')}` : line;
    })
    .join('\n');
}

/**
 * Starts a fio job over NBD in the background and returns { child, command, stop(), result }.
 * `result` resolves when the job ends (after --runtime, or early through `stop()`, which sends
 * SIGINT: fio then ends the job and still reports what it did) with
 * { iops, readIops, writeIops, totalIos, seconds, readClatP99Us, writeClatP99Us }, both
 * directions summed for mixed jobs (`rw=randrw`).
 */
export function startFio({ uri, name, rw, bs, iodepth, runtime, extra = [] }) {
  const args = [`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, `--bs=${bs}`, `--iodepth=${iodepth}`,
    `--runtime=${runtime}`, '--time_based', '--output-format=json', ...extra];
  const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), (runtime + 60) * 1000);
  const result = new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      const start = out.indexOf('{');
      let json;
      try {
        json = JSON.parse(out.slice(start));
      } catch {
        return reject(new Error(`fio ${name} failed (${signal ?? code}), no report\n${err.slice(-2000)}`));
      }
      const job = json.jobs[0];
      if (job.error !== 0) return reject(new Error(`fio ${name}: error ${job.error}\n${err.slice(-2000)}`));
      const p99 = (side) => (side.clat_ns?.percentile?.['99.000000'] ?? NaN) / 1000;
      const totalIos = job.read.total_ios + job.write.total_ios;
      if (!(totalIos > 0)) return reject(new Error(`fio ${name}: no I/O completed`));
      const seconds = (job.job_runtime || job.elapsed * 1000) / 1000;
      resolve({
        iops: totalIos / seconds,
        readIops: job.read.total_ios / seconds,
        writeIops: job.write.total_ios / seconds,
        totalIos,
        seconds,
        readClatP99Us: p99(job.read),
        writeClatP99Us: p99(job.write),
      });
    });
  });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    return result;
  };
  return { child, command: ['fio', ...args].join(' '), stop, result };
}

/**
 * After `rebound serve --data DATA` printed its banner: its first admin token (DATA/auth/admin.token)
 * becomes REBOUND_TOKEN, which api() sends and the `rebound` children inherit.
 */
export function useDaemonToken(dataDir) {
  process.env.REBOUND_TOKEN = fs.readFileSync(path.join(dataDir, 'auth', 'admin.token'), 'utf8').trim();
}

/** A call of the daemon's HTTP API (JSON, with REBOUND_TOKEN); throws with the answer on an error status. */
export async function api(http, method, url, body) {
  const res = await fetch(`${http}${url}`, {
    method,
    headers: {
      ...(process.env.REBOUND_TOKEN ? { authorization: `Bearer ${process.env.REBOUND_TOKEN}` } : {}),
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(600_000),
  });
  const j = await res.json();
  if (!res.ok) throw new Error(`${method} ${url}: ${JSON.stringify(j)}`);
  return j;
}

/** Runs `rebound --server HTTP ARGS --json` and returns its JSON answer. */
export async function rebound(http, args, timeoutMs = 3_600_000) {
  const r = await run(process.execPath, [REBOUND_MAIN, '--server', http, ...args, '--json'], { timeoutMs });
  return JSON.parse(r.stdout);
}

/**
 * One boot of the test guest (tools/guest, action boot: mount, unmount, power off) with its disk on
 * `drive` (an NBD URI); resolves with wall ms from QEMU start to exit.
 */
export async function bootGuestOnce(guestDir, drive, { timeoutMs = 300_000 } = {}) {
  const args = ['-accel', 'tcg', '-m', '256', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', path.join(guestDir, 'vmlinuz'), '-initrd', path.join(guestDir, 'initramfs.cpio.gz'),
    '-append', 'console=ttyS0 panic=-1 quiet mitigations=off no_timer_check rebound.action=boot',
    '-drive', `file=${drive.replaceAll(',', ',,')},format=raw,if=virtio,cache=writeback`];
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await new Promise((r) => child.once('exit', r));
  clearTimeout(timer);
  if (!out.includes('REBOUND-STATUS: ok')) throw new Error(`guest boot on ${drive} failed:\n${out.slice(-1500)}`);
  return performance.now() - t0;
}
