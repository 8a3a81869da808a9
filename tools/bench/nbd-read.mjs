#!/usr/bin/env node
/**
 * NBD read benchmark: rebound against nbdkit (file plugin) and qemu-nbd, same image, same clients.
 *
 *   node tools/bench/nbd-read.mjs [--size 1G] [--runtime 10] [--json] [--check]
 *
 * One run: writes a fully allocated raw image (random bytes mixed with compressible text, every
 * 4 KiB sector distinct) into a temp dir, reads it once so the page cache holds it for every
 * server alike, starts the three servers read-only on Unix sockets in that dir, and measures
 *   - nbdcopy URI null:            whole image, MiB/s
 *   - fio nbd 4 KiB randread qd32  IOPS
 *   - fio nbd 1 MiB seq read qd8   MiB/s
 * plus each server's CPU time (from /proc) per request / per GiB. Each metric runs against every
 * server in turn, --rounds times (after one untimed nbdcopy per server to warm it: see roundRobin in
 * lib.mjs), so slow drift on the machine hits all of them alike; the tables show each server's best
 * round and the targets also its median. Client and servers share the machine's cores; on a small
 * box one run differs from the next by 10-25 %.
 *
 * Everything (servers, temp dir) is cleaned up on success, failure and Ctrl-C, and every step
 * has a time limit. The rebound process inherits the environment (e.g. UV_THREADPOOL_SIZE);
 * "--rebound-node-args=--cpu-prof --cpu-prof-dir=/tmp/prof" passes flags to its node.
 *
 * Targets (issues 2 and 14): rebound 4 KiB random read IOPS >= 1.0x nbdkit (issue 14 raised it from 0.8x); sequential throughput >= 0.9x nbdkit.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  firstLine, fmt, killAllSync, log, measureFio, measureNbdcopy, MiB, REBOUND_MAIN, removeTmpSync, ROOT, roundRobin, run,
  setTmpDir, startServer, stopServer, table, which, writeImage,
} from './lib.mjs';

const EXPORT_NAME = 'bench';
const SERVER_NAMES = ['rebound', 'nbdkit', 'qemu-nbd'];
const TARGETS = { randIops: 1.0, seq: 0.9 };

const USAGE = `usage: node tools/bench/nbd-read.mjs [options]
  --size SIZE               image size (default 1G; units K, M, G as everywhere in rebound)
  --runtime SECONDS         duration of each fio job (default 10)
  --rounds N                rounds of each metric against every server (default 3)
  --json                    print the results as JSON instead of tables
  --check                   exit 1 when a target is not met
  --servers LIST            comma-separated subset of ${SERVER_NAMES.join(',')} (default all)
  --tmpdir DIR              parent of the temp dir (default ${os.tmpdir()})
  --rebound-node-args=ARGS  extra node flags for the rebound process (space-separated)
  -h, --help`;

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

// ---- measurements ---------------------------------------------------------------------------

// ---- main -----------------------------------------------------------------------------------

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      runtime: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '3' },
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
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a whole number >= 1');
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
  const perServer = (rounds + 1) * (60 + size / (20 * MiB)) + 2 * rounds * (runtime + 60) + 60;
  const budgetMs = (300 + names.length * perServer) * 1000;
  const watchdog = setTimeout(() => {
    log(`run exceeded its time limit of ${Math.round(budgetMs / 1000)} s; aborting`);
    process.exit(3);
  }, budgetMs);

  const tmpDir = fs.mkdtempSync(path.join(values.tmpdir, 'rebound-bench-'));
  setTmpDir(tmpDir);
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
      const sock = path.join(tmpDir, `${name}.sock`);
      const [cmd, args] = serverCommand(name, { sock, image, dir: tmpDir, reboundNodeArgs });
      const s = await startServer({ name, cmd, args, sock, uri: uriFor(sock), dir: tmpDir });
      if (s.exportSize !== size) throw new Error(`${name} reports size ${s.exportSize}, expected ${size}`);
      log(`  ${s.commandLine}`);
      servers.push(s);
    }

    const results = Object.fromEntries(servers.map((s) => [s.name, { command: s.commandLine, uri: s.uri, canMultiConn: s.canMultiConn }]));
    // Metric-major order: each metric runs against every server, round by round, before the next starts.
    const copies = await roundRobin(servers, {
      label: 'nbdcopy',
      rounds,
      measure: (s) => measureNbdcopy(s, size),
      score: (r) => r.mibps,
      describe: (r) => `${fmt(r.mibps)} MiB/s, server ${fmt(r.serverCpuSecPerGiB, 2)} CPU s/GiB`,
    });
    for (const s of servers) {
      const { runs, best, median } = copies[s.name];
      results[s.name].nbdcopy = { ...best, medianMibps: median.mibps, runs: runs.map((r) => r.mibps) };
    }
    for (const [key, job] of [
      ['randread4k', { name: 'rr', rw: 'randread', bs: '4k', iodepth: 32, runtime }],
      ['seqread1m', { name: 'sr', rw: 'read', bs: '1m', iodepth: 8, runtime }],
    ]) {
      const score = key === 'randread4k' ? (r) => r.iops : (r) => r.mibps;
      const runs = await roundRobin(servers, {
        label: `fio ${key} (${runtime} s)`,
        rounds,
        warmup: false, // the nbdcopy rounds warmed every server
        measure: (s) => measureFio(s, job),
        score,
        describe: (r) => (key === 'randread4k' ? `${fmt(r.iops)} IOPS` : `${fmt(r.mibps)} MiB/s`) + `, server ${fmt(r.serverCpuUsPerIo, 1)} CPU us/request`,
      });
      for (const s of servers) results[s.name][key] = { ...runs[s.name].best, median: score(runs[s.name].median), runs: runs[s.name].runs.map(score) };
    }

    const ratio = (other, pick) =>
      results.rebound && results[other] ? pick(results.rebound) / pick(results[other]) : NaN;
    const metrics = [
      { key: 'nbdcopy', label: `nbdcopy whole image, MiB/s (best of ${rounds})`, pick: (r) => r.nbdcopy.mibps, median: (r) => r.nbdcopy.medianMibps, digits: 0, target: TARGETS.seq },
      { key: 'randread4k', label: `fio 4K randread qd32, IOPS (best of ${rounds})`, pick: (r) => r.randread4k.iops, median: (r) => r.randread4k.median, digits: 0, target: TARGETS.randIops },
      { key: 'seqread1m', label: `fio 1M seq read qd8, MiB/s (best of ${rounds})`, pick: (r) => r.seqread1m.mibps, median: (r) => r.seqread1m.median, digits: 0, target: TARGETS.seq },
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
      return { metric: m.key, vsNbdkit: r, medianVsNbdkit: ratio('nbdkit', m.median), required: m.target, met: r >= m.target };
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
        console.log(`  ${m.label}: rebound/nbdkit ${x(t.vsNbdkit)} (need >= ${t.required}x)  ${t.met ? 'met' : 'NOT met'}; medians ${x(t.medianVsNbdkit)}`);
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
