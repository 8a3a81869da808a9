#!/usr/bin/env node
/**
 * The daemon's event-loop delay while a migration runs beside a VM's I/O:
 *
 *   node tools/bench/event-loop.mjs [--size 1G] [--runtime 15] [--iodepth 8] [--json] [--check]
 *
 * One daemon backs up a --size VM-like image, recovers it as session `vm`, and reads its own
 * event-loop delay (GET /v1/health?reset=1: perf_hooks.monitorEventLoopDelay, 10 ms resolution)
 * over four intervals:
 *   a. idle              --runtime s, session published, nothing running
 *   b. VM I/O            fio --ioengine=nbd randrw 4 KiB against the session export, --runtime s
 *   c. VM I/O + migrate  the same fio for --runtime s, and `rebound migrate vm --to
 *                        nbd+unix:///?socket=Q` (a qemu-nbd target) started with it
 *   d. migrate alone     a fresh session migrated to a fresh qemu-nbd target until in step, no VM I/O
 * The chunk cache holds the whole disk (--cache-size, default 1.5x --size) and is filled before
 * the measurements, so the figures are about the event loop, not chunk decompression.
 * Reported: p50/p99/max delay, fio IOPS (b, c), migration progress, daemon CPU, machine CPU busy.
 * Target: p99 < 5 ms during (c).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  api, cpuSeconds, fmt, killAllSync, log, MiB, pathFlags, REBOUND_MAIN, removeTmpSync, rebound, ROOT, run, setTmpDir, sleep, startFio, startServer, stopServer, table, which, writeVmImage,
  useDaemonToken,
} from './lib.mjs';

const TARGET_P99_MS = 5;

const USAGE = `usage: node tools/bench/event-loop.mjs [options]
  --size SIZE          VM disk (restore point) size (default 1G)
  --runtime S          seconds of the idle and VM-I/O-only intervals (default 15)
  --warmup S           fio before the measurements (default 5)
  --cache-size SIZE    the daemon's chunk cache (default 1.5x --size: the disk stays cached; smaller
                       sizes make the VM's reads and the migration decompress chunks again)
  --iodepth N          fio queue depth (default 8)
  --rwmixread PCT      share of reads in the VM's I/O (default 70)
  --rate-iops N        cap the VM's I/O at N IOPS in total (fio --rate_iops; default 0: as fast as it goes)
  --migrate-rate RATE  rebound migrate --rate (e.g. 100M/s; default unlimited)
  --tmpdir DIR         where the image and data directory go (default the OS temp dir)
  --rebound-node-args=ARGS  extra node flags for the daemon, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  --json               print JSON
  --check              exit 1 when the target (p99 < ${TARGET_P99_MS} ms during VM I/O + migration) is missed
  -h, --help`;

/** Busy and total jiffies of all CPUs (first line of /proc/stat). */
function machineCpu() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] || 0); // idle + iowait
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

const loadAvg = () => os.loadavg()[0];

/**
 * Brackets one interval: the daemon's delay window is reset at the start and read (and reset) at
 * the end; daemon CPU, machine CPU and the load average are taken alongside.
 */
async function interval(ctx, label, body) {
  await api(ctx.http, 'GET', '/v1/health?reset=1');
  const cpu0 = cpuSeconds(ctx.pid);
  const m0 = machineCpu();
  const load0 = loadAvg();
  const t0 = performance.now();
  const extra = await body();
  const health = await api(ctx.http, 'GET', '/v1/health?reset=1');
  const seconds = (performance.now() - t0) / 1000;
  const m1 = machineCpu();
  const d = health.eventLoopDelay.sinceReset;
  const r = {
    label,
    seconds,
    delay: { p50Ms: d.p50Ms, p99Ms: d.p99Ms, maxMs: d.maxMs, meanMs: d.meanMs, samples: d.samples, windowMs: d.windowMs },
    daemonCpuPct: (100 * (cpuSeconds(ctx.pid) - cpu0)) / seconds,
    machineBusyPct: (100 * (m1.busy - m0.busy)) / (m1.total - m0.total),
    loadAvg: [load0, loadAvg()],
    ...extra,
  };
  log(`${label}: p50 ${fmt(d.p50Ms, 2)} ms, p99 ${fmt(d.p99Ms, 2)} ms, max ${fmt(d.maxMs, 1)} ms over ${fmt(seconds, 1)} s` +
    `${r.fio ? `, fio ${fmt(r.fio.iops)} IOPS` : ''}${r.migration ? `, migration ${fmt(r.migration.mibps)} MiB/s` : ''}`);
  return r;
}

async function qemuTarget(ctx, name) {
  const file = path.join(ctx.tmpDir, `${name}.raw`);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, ctx.size);
  const sock = path.join(ctx.tmpDir, `${name}.sock`);
  return startServer({
    name: 'qemu-nbd', logName: name, cmd: 'qemu-nbd', args: ['-f', 'raw', '-k', sock, '-t', '--shared=8', file],
    sock, uri: `nbd+unix:///?socket=${sock}`, dir: ctx.tmpDir,
  });
}

/**
 * `rebound migrate SESSION --to TARGET` in the background; `inStep` resolves with the seconds until
 * the command returned (the migration is in step), or rejects.
 */
function migrate(ctx, session, target) {
  const args = [REBOUND_MAIN, '--server', ctx.http, 'migrate', session, '--to', target.uri, '--json'];
  if (ctx.migrateRate) args.push('--rate', ctx.migrateRate);
  const t0 = performance.now();
  const inStep = run(process.execPath, args, { timeoutMs: 3_600_000 }).then((r) => {
    const job = JSON.parse(r.stdout);
    if (job.state !== 'succeeded') throw new Error(`migration of ${session}: ${JSON.stringify(job.error ?? job)}`);
    return (performance.now() - t0) / 1000;
  });
  inStep.catch(() => undefined); // awaited later; no unhandled rejection meanwhile
  return { t0, inStep };
}

/** The first disk's migration progress from the sessions report. */
async function migrationProgress(ctx, session) {
  return (await api(ctx.http, 'GET', `/v1/sessions/${session}`)).disks[0].migration;
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      runtime: { type: 'string', default: '15' },
      'cache-size': { type: 'string' },
      warmup: { type: 'string', default: '5' },
      iodepth: { type: 'string', default: '8' },
      rwmixread: { type: 'string', default: '70' },
      'rate-iops': { type: 'string', default: '0' },
      'migrate-rate': { type: 'string' },
      tmpdir: { type: 'string', default: os.tmpdir() },
      'rebound-node-args': { type: 'string', default: '' },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return void console.log(USAGE);
  if (!fs.existsSync(REBOUND_MAIN)) throw new Error(`${REBOUND_MAIN} is missing: run 'npm run build' first`);
  for (const t of ['fio', 'qemu-nbd', 'nbdinfo']) if (!which(t)) throw new Error(`${t} is not installed (tools/setup.sh)`);
  const { parseSize } = await import(path.join(ROOT, 'dist/util/size.js'));
  const size = parseSize(values.size);
  const runtime = Number(values.runtime);
  const cacheSize = values['cache-size'] ? parseSize(values['cache-size']) : Math.ceil((size * 1.5) / MiB) * MiB;
  const rateIops = Number(values['rate-iops']);
  const mix = Number(values.rwmixread);
  const fioOpts = {
    name: 'vm', rw: 'randrw', bs: '4k', iodepth: Number(values.iodepth),
    extra: [`--rwmixread=${mix}`, ...(rateIops > 0 ? [`--rate_iops=${Math.round((rateIops * mix) / 100)},${rateIops - Math.round((rateIops * mix) / 100)}`] : [])],
  };

  const tmpDir = fs.mkdtempSync(path.join(values.tmpdir, 'rebound-bench-eld-'));
  setTmpDir(tmpDir);
  const sock = path.join(tmpDir, 'rebound.sock');
  const data = path.join(tmpDir, 'data');
  fs.mkdirSync(data);
  fs.writeFileSync(path.join(data, 'config.json'), JSON.stringify({ cacheSize }));
  const nodeArgs = values['rebound-node-args'].split(/\s+/).filter(Boolean);
  const server = await startServer({
    name: 'rebound', cmd: process.execPath, args: [...nodeArgs, REBOUND_MAIN, 'serve', '--data', data, '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', ...pathFlags()],
    sock, uri: `nbd+unix:///?socket=${sock}`, dir: tmpDir,
    ready: (_s, text) => /HTTP API: (http:\/\/[^/\s]+)\//.exec(text)?.[1],
  });
  useDaemonToken(data);
  const ctx = { http: server.ready, pid: server.pid, sock, tmpDir, size, migrateRate: values['migrate-rate'] };
  const R = {
    size, runtime, cacheSize, fio: { ...fioOpts, rateIops }, migrateRate: ctx.migrateRate ?? null, cpus: os.cpus().length,
    resolutionMs: (await api(ctx.http, 'GET', '/v1/health')).eventLoopDelay?.resolutionMs,
  };
  if (R.resolutionMs === undefined) throw new Error('GET /v1/health has no eventLoopDelay: dist/ predates the event-loop monitor (npm run build)');
  const servers = [];
  try {
    const img = path.join(tmpDir, 'vm.raw');
    log(`writing a ${fmt(size / MiB)} MiB VM-like image and backing it up`);
    writeVmImage(img, size);
    await rebound(ctx.http, ['backup', 'vm', '--disk', `disk0=${img}`]);
    fs.rmSync(img); // the restore point has it; keeps the page cache and tmpdir small
    await rebound(ctx.http, ['recover', 'vm', '--name', 'vm']);
    const uri = `nbd+unix:///session/vm/disk0?socket=${sock}`;
    if (cacheSize >= size) {
      log('reading the session export once (nbdcopy) so the chunk cache holds the disk');
      await run('nbdcopy', [uri, 'null:'], { timeoutMs: 600_000 });
    }
    const warmup = Number(values.warmup);
    if (warmup > 0) {
      log(`fio warm-up, ${warmup} s`);
      await startFio({ ...fioOpts, uri, runtime: warmup }).result;
    }
    R.intervals = [];

    R.intervals.push(await interval(ctx, 'a. idle', async () => {
      await sleep(runtime * 1000);
      return {};
    }));

    R.intervals.push(await interval(ctx, 'b. VM I/O', async () => ({ fio: await startFio({ ...fioOpts, uri, runtime }).result })));

    const target = await qemuTarget(ctx, 'target-c');
    servers.push(target);
    let mig;
    R.intervals.push(await interval(ctx, 'c. VM I/O + migration', async () => {
      const fio = startFio({ ...fioOpts, uri, runtime });
      mig = migrate(ctx, 'vm', target);
      const fioResult = await fio.result;
      const windowSeconds = (performance.now() - mig.t0) / 1000;
      const p = await migrationProgress(ctx, 'vm');
      const inStepSeconds = p.state === 'copying' ? null : await mig.inStep;
      return {
        fio: fioResult,
        migration: {
          state: p.state, inStepSeconds, doneBytes: p.doneBytes, copiedBytes: p.copiedBytes,
          mibps: inStepSeconds ? size / MiB / inStepSeconds : p.doneBytes / MiB / windowSeconds,
        },
      };
    }));
    const withIo = R.intervals.at(-1);
    if (withIo.migration.inStepSeconds === null) {
      withIo.migration.inStepAfterIoSeconds = await mig.inStep; // finishes without VM I/O; not measured
      log(`c. migration in step ${fmt(withIo.migration.inStepAfterIoSeconds, 1)} s after it started (after the VM I/O ended)`);
    }
    await api(ctx.http, 'DELETE', '/v1/sessions/vm');
    await stopServer(target);

    await rebound(ctx.http, ['recover', 'vm', '--name', 'vm2']);
    const target2 = await qemuTarget(ctx, 'target-d');
    servers.push(target2);
    R.intervals.push(await interval(ctx, 'd. migration alone', async () => {
      const inStepSeconds = await migrate(ctx, 'vm2', target2).inStep;
      return { migration: { state: 'synced', inStepSeconds, mibps: size / MiB / inStepSeconds } };
    }));
    await api(ctx.http, 'DELETE', '/v1/sessions/vm2');
    await stopServer(target2);
  } finally {
    for (const s of servers) await stopServer(s);
    await stopServer(server);
  }

  const c = R.intervals.find((i) => i.label.startsWith('c.'));
  R.target = { p99Ms: TARGET_P99_MS, met: c.delay.p99Ms < TARGET_P99_MS };
  if (values.json) console.log(JSON.stringify(R, null, 2));
  else {
    console.log(`\ndaemon event-loop delay (monitorEventLoopDelay, ${R.resolutionMs} ms resolution; ${fmt(size / MiB)} MiB disk, ${fmt(cacheSize / MiB)} MiB chunk cache, ` +
      `fio randrw 4 KiB ${mix}% reads QD ${fioOpts.iodepth}${rateIops > 0 ? ` capped at ${rateIops} IOPS` : ''}; ${R.cpus} CPUs)`);
    console.log(table([
      ['interval', 'seconds', 'p50 ms', 'p99 ms', 'max ms', 'fio IOPS', 'migration MiB/s', 'daemon CPU %', 'machine busy %', 'load avg'],
      ...R.intervals.map((i) => [i.label, fmt(i.seconds, 1), fmt(i.delay.p50Ms, 2), fmt(i.delay.p99Ms, 2), fmt(i.delay.maxMs, 1),
        i.fio ? fmt(i.fio.iops) : '', i.migration ? `${fmt(i.migration.mibps)}${i.migration.inStepSeconds ? '' : ' (copying)'}` : '', fmt(i.daemonCpuPct), fmt(i.machineBusyPct), i.loadAvg.map((l) => fmt(l, 1)).join(' -> ')]),
    ]));
    const m = c.migration;
    console.log(`\n(c) migration: ${m.inStepSeconds ? `in step after ${fmt(m.inStepSeconds, 1)} s` : `still copying when the VM I/O ended (${fmt(m.doneBytes / MiB)} of ${fmt(size / MiB)} MiB; in step ${fmt(m.inStepAfterIoSeconds, 1)} s after it started)`}`);
    console.log(`\ntarget: p99 < ${TARGET_P99_MS} ms during VM I/O + migration: ${R.target.met ? 'met' : 'MISSED'} (${fmt(c.delay.p99Ms, 2)} ms)`);
  }
  return values.check && !R.target.met ? 1 : 0;
}

main().then(
  (code) => {
    removeTmpSync();
    process.exit(code);
  },
  (err) => {
    console.error(`bench/event-loop: ${err.stack ?? err}`);
    killAllSync();
    removeTmpSync();
    process.exit(2);
  },
);
