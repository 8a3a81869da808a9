#!/usr/bin/env node
/**
 * NFS datastore read path: rebound against nfs-ganesha exporting the same raw file, in one run.
 * See tools/bench/README.md ("nfs.mjs"). Needs root: both servers and every client run in a private
 * network namespace, because QEMU's nfs:// driver always asks the portmapper on port 111.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { children, cpuSeconds, fmt, GiB, log, MiB, ROOT, run, setTmpDir, sleep, table, warmPageCache, which, writeImage } from './lib.mjs';

const USAGE = `usage: node tools/bench/nfs.mjs [--size 1G] [--repeat 2] [--servers rebound,ganesha] [--json] [--check] [--tmpdir DIR]
       [--rebound-node-args=ARGS]`;
const NFS_CHILD = path.join(ROOT, 'test/helpers/nfs-child.mjs');

function nsenter(pid, cmd, args) {
  return ['nsenter', ['-t', String(pid), '-n', cmd, ...args]];
}

/** Starts a long-running process inside the namespace; resolves once `ready()` says so. */
async function startIn(ns, name, cmd, args, { ready, timeoutMs = 30_000, logFile }) {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(...nsenter(ns, cmd, args), { stdio: ['ignore', out, out] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${name} did not start:\n${fs.readFileSync(logFile, 'utf8').slice(-3000)}`);
    }
    await sleep(100);
  }
  return child;
}

async function stop(child, signal = 'SIGTERM') {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(t);
}

async function portmapReady(ns, prog) {
  try {
    // `-s` asks over TCP (rebound's portmapper is TCP only; `-p` wants UDP from it).
    const r = await run(...nsenter(ns, 'rpcinfo', ['-s', '127.0.0.1']), { timeoutMs: 5000 });
    return r.stdout.split('\n').some((l) => l.trim().startsWith(`${prog} `) && l.includes('tcp'));
  } catch {
    return false;
  }
}

async function startRebound(ctx) {
  const cfgFile = path.join(ctx.dir, 'rebound.json');
  fs.writeFileSync(
    cfgFile,
    JSON.stringify({
      stateDir: path.join(ctx.dir, 'rebound-state'),
      nfs: '127.0.0.1:2049',
      portmap: '127.0.0.1:111',
      logLevel: 'warn',
      sessions: [
        {
          name: 'bench',
          vm: 'bench',
          pointId: 'p',
          createdAt: '2026-01-01T00:00:00Z',
          dir: path.join(ctx.dir, 'rebound-session'),
          disks: [{ name: 'disk0', base: ctx.image, overlay: path.join(ctx.dir, 'rebound-session/overlay') }],
        },
      ],
    }),
  );
  const child = await startIn(ctx.ns, 'rebound', process.execPath, [...ctx.nodeArgs, NFS_CHILD, cfgFile], {
    ready: () => portmapReady(ctx.ns, '100003'),
    logFile: path.join(ctx.dir, 'rebound.log'),
  });
  return { name: 'rebound', ns: ctx.ns, child, pid: child.pid, url: 'nfs://127.0.0.1/sessions/bench/disk0-flat.vmdk', stop: () => stop(child) };
}

async function startGanesha(ctx) {
  const conf = path.join(ctx.dir, 'ganesha.conf');
  fs.writeFileSync(
    conf,
    `NFS_CORE_PARAM { Protocols = 3; NFS_Port = 2049; MNT_Port = 20048; Enable_NLM = false; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; }
EXPORT {
  Export_Id = 1; Path = ${ctx.exportDir}; Pseudo = /export; Protocols = 3; Transports = TCP;
  Access_Type = RO; Squash = No_Root_Squash; SecType = sys;
  FSAL { Name = VFS; }
  CLIENT { Clients = *; Access_Type = RO; Squash = No_Root_Squash; }
}
LOG { Default_Log_Level = WARN; }
`,
  );
  const rpcbind = await startIn(ctx.ns, 'rpcbind', 'rpcbind', ['-f', '-w'], { ready: () => portmapReady(ctx.ns, '100000'), logFile: path.join(ctx.dir, 'rpcbind.log') });
  const pidFile = path.join(ctx.dir, 'ganesha.pid');
  let child;
  try {
    child = await startIn(ctx.ns, 'ganesha', 'ganesha.nfsd', ['-F', '-f', conf, '-L', path.join(ctx.dir, 'ganesha.log'), '-p', pidFile], {
      ready: () => portmapReady(ctx.ns, '100003'),
      logFile: path.join(ctx.dir, 'ganesha.out'),
    });
  } catch (err) {
    await stop(rpcbind);
    throw err;
  }
  return {
    name: 'ganesha',
    ns: ctx.ns,
    child,
    pid: child.pid,
    // NFSv3 mounts name ganesha's export by its real path.
    url: `nfs://127.0.0.1${ctx.exportDir}/disk.raw`,
    stop: async () => {
      await stop(child);
      await stop(rpcbind);
    },
  };
}

/** Whole-disk sequential read: qemu-img convert into QEMU's null driver (libnfs: 1 MiB READs, 16 in flight). */
async function seqRead(ctx, server) {
  const cpu0 = cpuSeconds(server.pid);
  const r = await run(...nsenter(server.ns, 'qemu-img', ['convert', '-n', '-f', 'raw', server.url, '--target-image-opts', `driver=null-co,size=${ctx.size}`]), {
    timeoutMs: 60_000 + (ctx.size / (20 * MiB)) * 1000,
  });
  return { mibps: ctx.size / MiB / r.seconds, seconds: r.seconds, cpuPerGiB: ((cpuSeconds(server.pid) - cpu0) * GiB) / ctx.size };
}

/** qemu-img bench: `count` reads of `bs` at queue depth 16, sequential offsets wrapping around the disk. */
async function qemuBench(ctx, server, bs) {
  const count = Math.max(256, Math.floor(Math.min(ctx.size, bs === MiB ? ctx.size : 512 * MiB) / bs));
  const cpu0 = cpuSeconds(server.pid);
  const r = await run(...nsenter(server.ns, 'qemu-img', ['bench', '-f', 'raw', '-c', String(count), '-d', '16', '-s', String(bs), server.url]), { timeoutMs: 300_000 });
  const secs = Number(/Run completed in ([\d.]+) seconds/.exec(r.stdout)?.[1]);
  if (!(secs > 0)) throw new Error(`qemu-img bench printed no time:\n${r.stdout}\n${r.stderr}`);
  return { mibps: (count * bs) / MiB / secs, iops: count / secs, seconds: secs, cpuPerGiB: ((cpuSeconds(server.pid) - cpu0) * GiB) / (count * bs) };
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      repeat: { type: 'string', default: '2' },
      servers: { type: 'string', default: 'rebound,ganesha' },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      tmpdir: { type: 'string', default: os.tmpdir() },
      'rebound-node-args': { type: 'string', default: '' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (process.getuid?.() !== 0) throw new Error('run as root: servers and clients need a private network namespace (port 111)');
  if (!fs.existsSync(path.join(ROOT, 'dist/nfs/server.js'))) throw new Error("dist/ is missing: run 'npm run build' first");
  for (const tool of ['qemu-img', 'unshare', 'nsenter', 'ip', 'rpcinfo', 'rpcbind', 'ganesha.nfsd']) {
    if (!which(tool)) throw new Error(`${tool} is not installed (tools/setup.sh installs it)`);
  }
  const { parseSize } = await import(path.join(ROOT, 'dist/util/size.js'));
  const size = parseSize(values.size);
  if (size < 64 * MiB || size % MiB !== 0) throw new Error('--size must be at least 64M and a multiple of 1M');
  const repeat = Number(values.repeat);
  const servers = values.servers.split(',').map((s) => s.trim());
  for (const s of servers) if (s !== 'rebound' && s !== 'ganesha') throw new Error(`unknown server ${s}`);
  const watchdog = setTimeout(() => {
    log('run exceeded its time limit; aborting');
    process.exit(3);
  }, (600 + (size / MiB) * 2) * 1000);
  watchdog.unref();

  const dir = fs.mkdtempSync(path.join(values.tmpdir, 'rebound-bench-nfs-'));
  setTmpDir(dir);
  const exportDir = path.join(dir, 'export');
  fs.mkdirSync(exportDir);
  const image = path.join(exportDir, 'disk.raw');
  log(`writing a fully allocated ${fmt(size / MiB)} MiB image`);
  writeImage(image, size);
  await warmPageCache(image);

  // Each server in its own network namespace (both want ports 111 and 2049), so both run at once
  // and every metric runs against each server back to back, in alternating order: drift of a
  // shared machine falls on both alike.
  const ctxBase = { dir, exportDir, image, size, nodeArgs: values['rebound-node-args'].split(/\s+/).filter(Boolean) };
  const started = [];
  const results = {};
  try {
    for (const name of servers) {
      const holder = spawn('unshare', ['--net', 'sleep', 'infinity'], { stdio: 'ignore' });
      children.add(holder);
      await sleep(200);
      await run(...nsenter(holder.pid, 'ip', ['link', 'set', 'lo', 'up']), { timeoutMs: 5000 });
      log(`starting ${name}`);
      const ctx = { ...ctxBase, ns: holder.pid };
      const server = name === 'rebound' ? await startRebound(ctx) : await startGanesha(ctx);
      started.push({ server, holder });
      // Warm-up (JIT, caches, connections), the same for every server; not measured.
      await run(...nsenter(server.ns, 'qemu-img', ['bench', '-f', 'raw', '-c', '4000', '-d', '16', '-s', '65536', server.url]), { timeoutMs: 120_000 });
      results[name] = {};
    }
    const best = (a, b, key = 'mibps') => (!a || b[key] > a[key] ? b : a);
    const metrics = [
      ['seq', (server) => seqRead(ctxBase, server)],
      ['b1m', (server) => qemuBench(ctxBase, server, MiB)],
      ['b64k', (server) => qemuBench(ctxBase, server, 64 * 1024)],
    ];
    for (let i = 0; i < repeat; i++) {
      const order = i % 2 === 0 ? started : [...started].reverse();
      for (const [key, measure] of metrics) {
        for (const { server } of order) results[server.name][key] = best(results[server.name][key], await measure(server));
      }
    }
    for (const name of servers) {
      const res = results[name];
      log(`  ${name}: seq ${fmt(res.seq.mibps)} MiB/s, 1M qd16 ${fmt(res.b1m.mibps)} MiB/s, 64K qd16 ${fmt(res.b64k.iops)} IOPS`);
    }
  } finally {
    for (const { server, holder } of started) {
      await server.stop().catch(() => undefined);
      holder.kill('SIGKILL');
    }
    for (const c of children) if (c.spawnargs?.[0] === 'unshare') c.kill('SIGKILL');
  }

  const rows = [
    ['metric', ...servers, ...(servers.length === 2 ? ['rebound/ganesha'] : [])],
    ['sequential read (qemu-img convert), MiB/s', ...servers.map((s) => fmt(results[s].seq.mibps)), ratio(results, 'seq', 'mibps')],
    ['  server CPU s/GiB', ...servers.map((s) => fmt(results[s].seq.cpuPerGiB, 2)), ''],
    ['1 MiB reads qd16 (qemu-img bench), MiB/s', ...servers.map((s) => fmt(results[s].b1m.mibps)), ratio(results, 'b1m', 'mibps')],
    ['  server CPU s/GiB', ...servers.map((s) => fmt(results[s].b1m.cpuPerGiB, 2)), ''],
    ['64 KiB reads qd16 (qemu-img bench), IOPS', ...servers.map((s) => fmt(results[s].b64k.iops)), ratio(results, 'b64k', 'iops')],
    ['  MiB/s', ...servers.map((s) => fmt(results[s].b64k.mibps)), ''],
    ['  server CPU s/GiB', ...servers.map((s) => fmt(results[s].b64k.cpuPerGiB, 2)), ''],
  ].map((r) => r.slice(0, servers.length === 2 ? 4 : 2));
  if (values.json) console.log(JSON.stringify({ size, repeat, results }, null, 2));
  else {
    console.log(`\nNFS read path, ${fmt(size / MiB)} MiB raw file, best of ${repeat} (${os.cpus().length} CPUs, ${os.hostname()})\n`);
    console.log(table(rows));
  }
  if (values.check && servers.length === 2) {
    const missed = ['seq', 'b1m', 'b64k'].filter((k) => results.rebound[k].mibps < results.ganesha[k].mibps);
    if (missed.length) {
      console.log(`\ntarget missed (rebound >= 1.0x ganesha): ${missed.join(', ')}`);
      return 1;
    }
    console.log('\nall targets met (rebound >= 1.0x ganesha)');
  }
  return 0;
}

function ratio(results, key, field) {
  if (!results.rebound || !results.ganesha) return '';
  return `${(results.rebound[key][field] / results.ganesha[key][field]).toFixed(2)}x`;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err.stack ?? String(err));
    process.exit(2);
  },
);
