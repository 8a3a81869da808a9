#!/usr/bin/env node
/**
 * iSCSI target: rebound against tgtd (Debian tgt) serving the same raw file, in one run. See
 * tools/bench/README.md ("iscsi.mjs"). Both listen on 127.0.0.1 TCP ports picked at start; tgtd
 * needs root.
 *
 * Workloads, each against every server before the next starts:
 *  - 4 KiB random read, IOPS: `iscsi-perf -r -b 8 -m 32 -t R` (libiscsi-bin)
 *  - 1 MiB sequential read, MiB/s: `iscsi-perf -b 2048 -m 8 -t R`
 *  - 4 KiB scattered write, IOPS: `qemu-img bench -w -s 4096 -d 32 -c N -S 1028K` (QEMU's iscsi
 *    driver); rebound writes into a copy-on-write overlay over the image (its product path),
 *    tgtd into a copy of the image (its file backing store, bstype rdwr).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { children, cpuSeconds, fmt, log, MiB, REBOUND_MAIN, run, setTmpDir, sleep, table, warmPageCache, which, writeImage } from './lib.mjs';
import { spawn } from 'node:child_process';

const USAGE = 'usage: node tools/bench/iscsi.mjs [--size 1G] [--runtime 10] [--writes 40000] [--servers rebound,tgt] [--json] [--check] [--tmpdir DIR]';
const INITIATOR = 'iqn.2026-12.org.rebound.bench:initiator';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '1G' },
    runtime: { type: 'string', default: '10' },
    writes: { type: 'string', default: '40000' },
    servers: { type: 'string', default: 'rebound,tgt' },
    json: { type: 'boolean', default: false },
    check: { type: 'boolean', default: false },
    tmpdir: { type: 'string', default: '/tmp' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const size = parseSize(values.size);
const runtime = Number(values.runtime);
const writes = Number(values.writes);
const servers = values.servers.split(',');

function parseSize(s) {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  return Number(m[1]) * { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2].toUpperCase()];
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function spawnLogged(name, cmd, args, dir) {
  const logFile = path.join(dir, `${name}.log`);
  const fd = fs.openSync(logFile, 'w');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  children.add(child);
  child.on('exit', () => children.delete(child));
  return { child, logFile, log: () => fs.readFileSync(logFile, 'utf8') };
}

async function until(what, fn, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`${what} did not become ready`);
    await sleep(100);
  }
}

async function startRebound(dir, image) {
  const port = await freePort();
  const p = spawnLogged('rebound', process.execPath, [REBOUND_MAIN, 'serve', '--data', path.join(dir, 'data'), '--nbd', 'none', '--http', 'off', '--iscsi', `127.0.0.1:${port}`, '--export', `bench=${image}`, '--export', `benchw=${image},cow`], dir);
  await until('rebound', () => p.log().includes('iSCSI: portal at'));
  const base = `iscsi://127.0.0.1:${port}`;
  return { name: 'rebound', ...p, read: `${base}/iqn.2026-12.org.rebound:export.bench/0`, write: `${base}/iqn.2026-12.org.rebound:export.benchw/0`, stop: () => p.child.kill('SIGTERM') };
}

async function startTgt(dir, image) {
  const port = await freePort();
  const ctl = String(100 + (process.pid % 800));
  const copy = path.join(dir, 'tgt-write.raw');
  fs.copyFileSync(image, copy);
  const p = spawnLogged('tgt', 'tgtd', ['-f', '-C', ctl, '--iscsi', `portal=127.0.0.1:${port}`], dir);
  const adm = (...a) => run('tgtadm', ['-C', ctl, '--lld', 'iscsi', ...a], { timeoutMs: 10_000 });
  await until('tgtd', async () => {
    try {
      await adm('--op', 'show', '--mode', 'target');
      return true;
    } catch {
      return false;
    }
  });
  const iqn = 'iqn.2026-12.org.rebound.bench:tgt';
  await adm('--op', 'new', '--mode', 'target', '--tid', '1', '-T', iqn);
  await adm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '1', '-b', image, '--bstype', 'rdwr');
  await adm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '2', '-b', copy, '--bstype', 'rdwr');
  await adm('--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL');
  const base = `iscsi://127.0.0.1:${port}/${iqn}`;
  return { name: 'tgt', ...p, read: `${base}/1`, write: `${base}/2`, stop: () => p.child.kill('SIGKILL') };
}

async function iscsiPerf(url, args) {
  const r = await run('iscsi-perf', ['-i', INITIATOR, ...args, '-t', String(runtime), url], { timeoutMs: (runtime + 60) * 1000 });
  const m = /iops average (\d+) \((\d+) MB\/s\)/.exec(r.stdout.split('finished')[0].split('\r').join('\n').split('\n').reverse().join('\n'));
  if (!m) throw new Error(`iscsi-perf printed no average:\n${r.stdout.slice(-1000)}`);
  return { iops: Number(m[1]), mbs: Number(m[2]) };
}

async function qemuBenchWrite(url) {
  const t0 = Date.now();
  const r = await run('qemu-img', ['bench', '-f', 'raw', '-w', '-s', '4096', '-d', '32', '-c', String(writes), '-S', String(1028 * 1024), url], { timeoutMs: 600_000 });
  const m = /Run completed in ([\d.]+) seconds/.exec(r.stdout);
  const secs = m ? Number(m[1]) : (Date.now() - t0) / 1000;
  return { iops: writes / secs };
}

async function main() {
  for (const c of ['iscsi-perf', 'qemu-img', ...(servers.includes('tgt') ? ['tgtd', 'tgtadm'] : [])]) if (!which(c)) throw new Error(`missing ${c} (tools/setup.sh)`);
  if (!fs.existsSync(REBOUND_MAIN)) throw new Error('run npm run build first');
  const dir = fs.mkdtempSync(path.join(values.tmpdir, 'rebound-bench-iscsi-'));
  setTmpDir(dir);
  const image = path.join(dir, 'image.raw');
  log(`writing a ${values.size} image`);
  writeImage(image, size);
  await warmPageCache(image);
  const started = [];
  try {
    for (const s of servers) started.push(s === 'rebound' ? await startRebound(dir, image) : await startTgt(dir, image));
    const results = Object.fromEntries(started.map((s) => [s.name, {}]));
    const metrics = [
      ['randread4k', 'IOPS', (s) => iscsiPerf(s.read, ['-r', '-b', '8', '-m', '32']).then((r) => r.iops)],
      ['seqread1m', 'MiB/s', (s) => iscsiPerf(s.read, ['-b', '2048', '-m', '8']).then((r) => r.mbs)],
      ['randwrite4k', 'IOPS', (s) => qemuBenchWrite(s.write).then((r) => r.iops)],
    ];
    for (const [metric, , fn] of metrics) {
      for (const s of started) {
        log(`${metric} on ${s.name}`);
        const cpu0 = cpuSeconds(s.child.pid);
        results[s.name][metric] = await fn(s);
        results[s.name][`${metric}_cpu_s`] = cpuSeconds(s.child.pid) - cpu0;
      }
    }
    const ratio = (m) => (results.rebound && results.tgt ? results.rebound[m] / results.tgt[m] : undefined);
    const targets = { randread4k: 1.0, seqread1m: 1.0, randwrite4k: 1.0 };
    if (values.json) {
      console.log(JSON.stringify({ size, runtime, writes, results, ratios: Object.fromEntries(metrics.map(([m]) => [m, ratio(m)])), targets }, null, 2));
    } else {
      const rows = [['metric', ...started.map((s) => s.name), 'rebound/tgt', 'target']];
      for (const [m, unit] of metrics) rows.push([`${m} (${unit})`, ...started.map((s) => fmt(results[s.name][m])), ratio(m) === undefined ? '-' : `${fmt(ratio(m), 2)}x`, `>= ${targets[m]}x`]);
      for (const [m] of metrics) rows.push([`${m} server CPU s`, ...started.map((s) => fmt(results[s.name][`${m}_cpu_s`], 1)), '', '']);
      console.log(table(rows));
    }
    if (values.check && metrics.some(([m]) => ratio(m) !== undefined && ratio(m) < targets[m])) process.exitCode = 1;
  } finally {
    for (const s of started) s.stop();
    await sleep(300);
  }
}

main().catch((err) => {
  console.error(err.stack ?? String(err));
  process.exitCode = 1;
});
