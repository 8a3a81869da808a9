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

// ---- servers -------------------------------------------------------------------------------

/**
 * Starts a server that listens on `sock` and waits until `nbdinfo --size uri` answers.
 * Resolves with { name, child, pid, sock, uri, logFile, commandLine, exportSize, canMultiConn }.
 */
export async function startServer({ name, cmd, args, sock, uri, dir }) {
  const logFile = path.join(dir, `${name}.log`);
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
  const logTail = () => fs.readFileSync(logFile, 'utf8').slice(-2000);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited !== undefined) throw new Error(`${name} exited (${exited}) before serving:\n${logTail()}`);
    if (fs.existsSync(sock)) {
      try {
        const r = await run('nbdinfo', ['--size', server.uri], { timeoutMs: 5_000 });
        server.exportSize = Number(r.stdout.trim());
        break;
      } catch {
        // not ready yet
      }
    }
    if (Date.now() > deadline) throw new Error(`${name} did not accept connections within 30 s:\n${logTail()}`);
    await sleep(100);
  }
  const info = await run('nbdinfo', [server.uri], { timeoutMs: 10_000 });
  server.canMultiConn = /can_multi_conn:\s*true/.test(info.stdout);
  return server;
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
    clientCpuPct: job.usr_cpu + job.sys_cpu,
    serverCpuPct: (100 * cpu) / (job.elapsed || runtime),
    serverCpuUsPerIo: (1e6 * cpu) / rd.total_ios,
    command: ['fio', ...args].join(' '),
  };
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
