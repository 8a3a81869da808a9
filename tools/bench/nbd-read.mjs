#!/usr/bin/env node
/**
 * NBD read benchmark: rebound against nbdkit (file plugin) and qemu-nbd, same image, same clients.
 *
 *   node tools/bench/nbd-read.mjs [--size 1G] [--runtime 10] [--json] [--check]
 *
 * One run: writes a fully allocated raw image (random bytes mixed with compressible text, every
 * 4 KiB sector distinct) into a temp dir, reads it once so the page cache holds it for every
 * server alike, starts the three servers read-only on Unix sockets in that dir, and measures
 *   - nbdcopy URI null:            whole image, best of 2, MiB/s
 *   - fio nbd 4 KiB randread qd32  IOPS
 *   - fio nbd 1 MiB seq read qd8   MiB/s
 * plus each server's CPU time (from /proc) per request / per GiB. Measurements are interleaved
 * metric by metric across servers so slow drift on the machine hits all of them alike. Client and
 * servers share the machine's cores; on a small box expect run-to-run variance of 5-15 %.
 *
 * Everything (servers, temp dir) is cleaned up on success, failure and Ctrl-C, and every step
 * has a time limit. The rebound process inherits the environment (e.g. UV_THREADPOOL_SIZE);
 * "--rebound-node-args=--cpu-prof --cpu-prof-dir=/tmp/prof" passes flags to its node.
 *
 * Targets (issue): rebound 4 KiB random read IOPS >= 0.8x nbdkit; sequential throughput >= 0.9x nbdkit.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const REBOUND_MAIN = path.join(ROOT, 'dist/cli/main.js');
const EXPORT_NAME = 'bench';
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SERVER_NAMES = ['rebound', 'nbdkit', 'qemu-nbd'];
const TARGETS = { randIops: 0.8, seq: 0.9 };

const USAGE = `usage: node tools/bench/nbd-read.mjs [options]
  --size SIZE               image size (default 1G; units K, M, G as everywhere in rebound)
  --runtime SECONDS         duration of each fio job (default 10)
  --json                    print the results as JSON instead of tables
  --check                   exit 1 when a target is not met
  --servers LIST            comma-separated subset of ${SERVER_NAMES.join(',')} (default all)
  --tmpdir DIR              parent of the temp dir (default ${os.tmpdir()})
  --rebound-node-args=ARGS  extra node flags for the rebound process (space-separated)
  -h, --help`;

// ---- cleanup --------------------------------------------------------------------------------

/** Every child we started and have not yet seen exit. */
const children = new Set();
let tmpDir;

function killAllSync() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

function removeTmpSync() {
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

function log(msg) {
  process.stderr.write(`[bench] ${msg}\n`);
}

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function firstLine(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  return (r.stdout || r.stderr || '').split('\n')[0].trim();
}

/** Runs a command to completion; rejects on a non-zero exit or when it outlives timeoutMs. */
function run(cmd, args, { timeoutMs, stdout = 'pipe' } = {}) {
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const CLK_TCK = Number(firstLine('getconf', ['CLK_TCK'])) || 100;

/** User+system CPU seconds of a process (all its threads), or NaN when unavailable. */
function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14, 15)
  } catch {
    return NaN;
  }
}

// ---- image ----------------------------------------------------------------------------------

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
function writeImage(file, size) {
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

// ---- servers --------------------------------------------------------------------------------

function serverCommand(name, { sock, image, dir, reboundNodeArgs }) {
  switch (name) {
    case 'rebound':
      return [
        process.execPath,
        [
          ...reboundNodeArgs,
          REBOUND_MAIN,
          'serve',
          '--data', path.join(dir, 'rebound-data'),
          '--nbd', 'none',
          '--nbd-socket', sock,
          '--http', 'off',
          '--export', `${EXPORT_NAME}=${image}`,
        ],
      ];
    case 'nbdkit':
      // File plugin, default (parallel) thread model and 16 threads; the export name is ignored.
      return ['nbdkit', ['-r', '-f', '--exit-with-parent', '-U', sock, 'file', image]];
    case 'qemu-nbd':
      // -t: keep serving after a client disconnects; --shared: nbdcopy opens 4 connections.
      return ['qemu-nbd', ['-r', '-f', 'raw', '-x', EXPORT_NAME, '-k', sock, '-t', '--shared=8', image]];
    default:
      throw new Error(`unknown server ${name}`);
  }
}

function uriFor(sock) {
  return `nbd+unix:///${EXPORT_NAME}?socket=${encodeURIComponent(sock)}`;
}

async function startServer(name, opts) {
  const sock = path.join(opts.dir, `${name}.sock`);
  const [cmd, args] = serverCommand(name, { ...opts, sock });
  const logFile = path.join(opts.dir, `${name}.log`);
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
  const server = { name, child, pid: child.pid, sock, uri: uriFor(sock), logFile, commandLine: [cmd, ...args].join(' ') };
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

async function stopServer(server) {
  const { child } = server;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(timer);
}

// ---- measurements ---------------------------------------------------------------------------

async function measureNbdcopy(server, size) {
  const timeoutMs = 60_000 + (size / (20 * MiB)) * 1000; // far slower than 20 MiB/s is a failure anyway
  const cpu0 = cpuSeconds(server.pid);
  const { seconds } = await run('nbdcopy', [server.uri, 'null:'], { timeoutMs });
  const cpu = cpuSeconds(server.pid) - cpu0;
  return { seconds, mibps: size / MiB / seconds, serverCpuSecPerGiB: cpu / (size / GiB) };
}

async function measureFio(server, { name, rw, bs, iodepth, runtime }) {
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
  ];
  const cpu0 = cpuSeconds(server.pid);
  const r = await run('fio', args, { timeoutMs: (runtime + 60) * 1000 });
  const cpu = cpuSeconds(server.pid) - cpu0;
  const json = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')));
  const job = json.jobs[0];
  if (job.error !== 0) throw new Error(`fio ${name} against ${server.name}: error ${job.error}`);
  const rd = job.read;
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

function fmt(v, digits = 0) {
  if (v === undefined || Number.isNaN(v)) return 'n/a';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  return rows
    .map((r, i) => {
      const line = r.map((cell, c) => (c === 0 ? String(cell).padEnd(widths[c]) : String(cell).padStart(widths[c]))).join('  ');
      return i === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('  ')}` : line;
    })
    .join('\n');
}

// ---- main -----------------------------------------------------------------------------------

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      runtime: { type: 'string', default: '10' },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      servers: { type: 'string', default: SERVER_NAMES.join(',') },
      tmpdir: { type: 'string', default: os.tmpdir() },
      'rebound-node-args': { type: 'string', default: '' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!fs.existsSync(REBOUND_MAIN)) throw new Error(`${REBOUND_MAIN} is missing: run 'npm run build' first`);
  const { parseSize } = await import(path.join(ROOT, 'dist/util/size.js'));
  const size = parseSize(values.size);
  if (size < MiB || size % 4096 !== 0) throw new Error('--size must be at least 1M and a multiple of 4K');
  const runtime = Number(values.runtime);
  if (!Number.isInteger(runtime) || runtime < 1) throw new Error('--runtime must be a whole number of seconds >= 1');
  const reboundNodeArgs = values['rebound-node-args'].split(/\s+/).filter(Boolean);

  for (const tool of ['nbdinfo', 'nbdcopy', 'fio']) {
    if (!which(tool)) throw new Error(`${tool} is not installed (tools/setup.sh installs it)`);
  }
  const wanted = values.servers.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of wanted) if (!SERVER_NAMES.includes(s)) throw new Error(`unknown server '${s}'`);
  const names = wanted.filter((s) => {
    const bin = s === 'rebound' ? process.execPath : s;
    if (which(bin)) return true;
    log(`skipping ${s}: not installed`);
    return false;
  });

  // Hard bound on the whole run, whatever hangs.
  const perServer = 2 * (60 + size / (20 * MiB)) + 2 * (runtime + 60) + 60;
  const budgetMs = (300 + names.length * perServer) * 1000;
  const watchdog = setTimeout(() => {
    log(`run exceeded its time limit of ${Math.round(budgetMs / 1000)} s; aborting`);
    process.exit(3);
  }, budgetMs);

  tmpDir = fs.mkdtempSync(path.join(values.tmpdir, 'rebound-bench-'));
  const image = path.join(tmpDir, 'image.raw');
  log(`writing a ${fmt(size / MiB)} MiB image to ${image}`);
  let t = Date.now();
  writeImage(image, size);
  log(`  written and synced in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  t = Date.now();
  const devNull = fs.openSync('/dev/null', 'w');
  try {
    await run('cat', [image], { stdout: devNull, timeoutMs: 120_000 });
  } finally {
    fs.closeSync(devNull);
  }
  log(`  warmed the page cache in ${((Date.now() - t) / 1000).toFixed(1)} s`);

  const servers = [];
  try {
    for (const name of names) {
      log(`starting ${name}`);
      const s = await startServer(name, { image, dir: tmpDir, reboundNodeArgs });
      if (s.exportSize !== size) throw new Error(`${name} reports size ${s.exportSize}, expected ${size}`);
      log(`  ${s.commandLine}`);
      servers.push(s);
    }

    const results = Object.fromEntries(servers.map((s) => [s.name, { command: s.commandLine, uri: s.uri, canMultiConn: s.canMultiConn }]));
    // Metric-major order: each metric runs against every server before the next metric starts.
    for (let i = 0; i < 2; i++) {
      for (const s of servers) {
        log(`nbdcopy #${i + 1} ${s.name}`);
        const r = await measureNbdcopy(s, size);
        log(`  ${fmt(r.mibps)} MiB/s`);
        const prev = results[s.name].nbdcopy;
        const runs = [...(prev?.runs ?? []), r];
        const best = runs.reduce((a, b) => (b.mibps > a.mibps ? b : a));
        results[s.name].nbdcopy = { runs, mibps: best.mibps, serverCpuSecPerGiB: best.serverCpuSecPerGiB, command: `nbdcopy ${s.uri} null:` };
      }
    }
    for (const [key, job] of [
      ['randread4k', { name: 'rr', rw: 'randread', bs: '4k', iodepth: 32, runtime }],
      ['seqread1m', { name: 'sr', rw: 'read', bs: '1m', iodepth: 8, runtime }],
    ]) {
      for (const s of servers) {
        log(`fio ${key} ${s.name} (${runtime} s)`);
        const r = await measureFio(s, job);
        log(key === 'randread4k' ? `  ${fmt(r.iops)} IOPS` : `  ${fmt(r.mibps)} MiB/s`);
        results[s.name][key] = r;
      }
    }

    const ratio = (other, pick) =>
      results.rebound && results[other] ? pick(results.rebound) / pick(results[other]) : NaN;
    const metrics = [
      { key: 'nbdcopy', label: 'nbdcopy whole image, MiB/s (best of 2)', pick: (r) => r.nbdcopy.mibps, digits: 0, target: TARGETS.seq },
      { key: 'randread4k', label: 'fio 4K randread qd32, IOPS', pick: (r) => r.randread4k.iops, digits: 0, target: TARGETS.randIops },
      { key: 'seqread1m', label: 'fio 1M seq read qd8, MiB/s', pick: (r) => r.seqread1m.mibps, digits: 0, target: TARGETS.seq },
    ];
    const costs = [
      { label: 'server CPU s per GiB, nbdcopy', pick: (r) => r.nbdcopy.serverCpuSecPerGiB, digits: 2 },
      { label: 'server CPU us per 4K read', pick: (r) => r.randread4k.serverCpuUsPerIo, digits: 1 },
      { label: 'server CPU % during 4K randread', pick: (r) => r.randread4k.serverCpuPct, digits: 0 },
      { label: 'fio 4K randread p99 latency, us', pick: (r) => r.randread4k.clatP99Us, digits: 0 },
      { label: 'server CPU us per 1M read', pick: (r) => r.seqread1m.serverCpuUsPerIo, digits: 0 },
    ];
    const targets = metrics.map((m) => {
      const r = ratio('nbdkit', m.pick);
      return { metric: m.key, vsNbdkit: r, required: m.target, met: r >= m.target };
    });

    const out = {
      config: {
        size,
        runtime,
        cpus: os.cpus().length,
        node: process.version,
        uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? '4 (default)',
        versions: {
          nbdkit: firstLine('nbdkit', ['--version']),
          'qemu-nbd': firstLine('qemu-nbd', ['--version']),
          nbdcopy: firstLine('nbdcopy', ['--version']),
          fio: firstLine('fio', ['--version']),
        },
      },
      servers: results,
      ratios: Object.fromEntries(
        metrics.map((m) => [m.key, { nbdkit: ratio('nbdkit', m.pick), 'qemu-nbd': ratio('qemu-nbd', m.pick) }]),
      ),
      targets,
    };

    if (values.json) {
      console.log(JSON.stringify(out, (_k, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toFixed(3)) : v), 2));
    } else {
      const cols = ['rebound', 'nbdkit', 'qemu-nbd'];
      const val = (name, m) => (results[name] ? fmt(m.pick(results[name]), m.digits) : 'n/a');
      const x = (v) => (Number.isNaN(v) ? 'n/a' : `${v.toFixed(2)}x`);
      console.log(
        `\nNBD read benchmark: ${fmt(size / MiB)} MiB image, fio runtime ${runtime} s, ${os.cpus().length} CPUs, ` +
          `node ${process.version}, UV_THREADPOOL_SIZE=${out.config.uvThreadpoolSize}\n`,
      );
      console.log(
        table([
          ['metric', ...cols, 'rebound/nbdkit', 'rebound/qemu-nbd'],
          ...metrics.map((m) => [m.label, ...cols.map((c) => val(c, m)), x(ratio('nbdkit', m.pick)), x(ratio('qemu-nbd', m.pick))]),
        ]),
      );
      console.log('\nCost (lower is better):\n');
      console.log(
        table([
          ['metric', ...cols, 'rebound/nbdkit', 'rebound/qemu-nbd'],
          ...costs.map((m) => [m.label, ...cols.map((c) => val(c, m)), x(ratio('nbdkit', m.pick)), x(ratio('qemu-nbd', m.pick))]),
        ]),
      );
      console.log('\nTargets:');
      for (const t of targets) {
        const m = metrics.find((mm) => mm.key === t.metric);
        console.log(`  ${m.label}: rebound/nbdkit ${x(t.vsNbdkit)} (need >= ${t.required}x)  ${t.met ? 'met' : 'NOT met'}`);
      }
      console.log('\nServers:');
      for (const s of servers) console.log(`  ${s.name.padEnd(8)} ${s.commandLine}${s.canMultiConn ? '' : '  (no multi-conn)'}`);
    }
    clearTimeout(watchdog);
    return values.check && targets.some((t) => !t.met) ? 1 : 0;
  } finally {
    await Promise.all(servers.map(stopServer));
    killAllSync();
    removeTmpSync();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`nbd-read: ${err instanceof Error ? err.message : err}\n`);
    process.exit(1);
  },
);
