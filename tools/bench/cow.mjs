#!/usr/bin/env node
/**
 * Copy-on-write benchmark: rebound's persistent overlay against `nbdkit --filter=cow file` on the
 * same base image, in one run.
 *
 *   node tools/bench/cow.mjs [--size 1G] [--runtime 10] [--block-sizes 4K,16K,64K] [--json] [--check]
 *
 * For every server (rebound once per overlay block size, so the default block size is chosen by
 * measurement; nbdkit with its default 64 KiB cow blocks) on a fresh overlay:
 *   1. fio 4 KiB random write, queue depth 32    -> IOPS (every write lands in the overlay)
 *   2. fio 4 KiB random read, queue depth 32     -> IOPS (the merged view, after those writes)
 * plus the server's CPU time per request. Target (issue): rebound >= 1.0x nbdkit on both.
 * The base's sha256 is checked unchanged at the end.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  firstLine, fmt, killAllSync, log, measureFio, MiB, REBOUND_MAIN, removeTmpSync, ROOT, run, setTmpDir, startServer,
  stopServer, table, which, writeImage,
} from './lib.mjs';

const TARGET = 1.0;
const USAGE = `usage: node tools/bench/cow.mjs [options]
  --size SIZE          base image size (default 1G)
  --runtime SECONDS    duration of each fio job (default 10)
  --block-sizes LIST   rebound overlay block sizes to measure (default 4K,64K); the first is the default
  --json               print JSON
  --check              exit 1 when a target is missed
  -h, --help`;

function sha256(file) {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(4 * MiB);
  try {
    for (let n; (n = fs.readSync(fd, buf)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      runtime: { type: 'string', default: '10' },
      'block-sizes': { type: 'string', default: '4K,64K' },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!fs.existsSync(REBOUND_MAIN)) throw new Error(`${REBOUND_MAIN} is missing: run 'npm run build' first`);
  for (const tool of ['nbdkit', 'nbdinfo', 'fio']) if (!which(tool)) throw new Error(`${tool} is not installed (tools/setup.sh)`);
  const { parseSize } = await import(path.join(ROOT, 'dist/util/size.js'));
  const size = parseSize(values.size);
  const runtime = Number(values.runtime);
  const blockSizes = values['block-sizes'].split(',').map((s) => s.trim());

  const budgetMs = (600 + (blockSizes.length + 1) * (2 * (runtime + 60) + 60)) * 1000;
  const watchdog = setTimeout(() => {
    log('run exceeded its time limit; aborting');
    process.exit(3);
  }, budgetMs);

  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-bench-cow-'));
  setTmpDir(tmpDir);
  const base = path.join(tmpDir, 'base.raw');
  log(`writing a ${fmt(size / MiB)} MiB base image`);
  writeImage(base, size);
  const devNull = fs.openSync('/dev/null', 'w');
  await run('cat', [base], { stdout: devNull, timeoutMs: 120_000 });
  fs.closeSync(devNull);
  const baseSha = sha256(base);

  const variants = [
    ...blockSizes.map((bs) => ({
      name: `rebound-${bs}`,
      make: (sock, dir) => [
        process.execPath,
        [REBOUND_MAIN, 'serve', '--data', path.join(dir, 'data'), '--nbd', 'none', '--nbd-socket', sock, '--http', 'off',
          '--export', `vm=${base},cow=${path.join(dir, 'overlay')},cow-block-size=${bs}`],
      ],
      uri: (sock) => `nbd+unix:///vm?socket=${encodeURIComponent(sock)}`,
    })),
    {
      name: 'nbdkit-cow',
      make: (sock) => ['nbdkit', ['-f', '--exit-with-parent', '-U', sock, '--filter=cow', 'file', base]],
      uri: (sock) => `nbd+unix:///?socket=${encodeURIComponent(sock)}`,
    },
  ];

  const results = {};
  try {
    for (const v of variants) {
      const dir = fs.mkdtempSync(path.join(tmpDir, `${v.name}-`));
      const sock = path.join(dir, 's.sock');
      const [cmd, args] = v.make(sock, dir);
      log(`starting ${v.name}`);
      const server = await startServer({ name: v.name, cmd, args, sock, uri: v.uri(sock), dir });
      try {
        log(`  fio 4K randwrite qd32 (${runtime} s)`);
        const w = await measureFio(server, { name: 'rw', rw: 'randwrite', bs: '4k', iodepth: 32, runtime, dir: 'write' });
        log(`    ${fmt(w.iops)} IOPS`);
        log(`  fio 4K randread qd32 after writes (${runtime} s)`);
        const r = await measureFio(server, { name: 'rr', rw: 'randread', bs: '4k', iodepth: 32, runtime });
        log(`    ${fmt(r.iops)} IOPS`);
        results[v.name] = { command: server.commandLine, randwrite4k: w, randread4k: r };
      } finally {
        await stopServer(server);
      }
    }
    if (sha256(base) !== baseSha) throw new Error('the base image changed!');

    const ref = results['nbdkit-cow'];
    const def = results[variants[0].name];
    const rows = [
      ['metric', ...variants.map((v) => v.name), `${variants[0].name}/nbdkit`],
      ['4K random write IOPS (qd32)', ...variants.map((v) => fmt(results[v.name].randwrite4k.iops)), `${(def.randwrite4k.iops / ref.randwrite4k.iops).toFixed(2)}x`],
      ['4K random read after writes IOPS', ...variants.map((v) => fmt(results[v.name].randread4k.iops)), `${(def.randread4k.iops / ref.randread4k.iops).toFixed(2)}x`],
      ['server CPU us per 4K write', ...variants.map((v) => fmt(results[v.name].randwrite4k.serverCpuUsPerIo, 1)), ''],
      ['server CPU us per 4K read', ...variants.map((v) => fmt(results[v.name].randread4k.serverCpuUsPerIo, 1)), ''],
      ['4K write p99 latency, us', ...variants.map((v) => fmt(results[v.name].randwrite4k.clatP99Us)), ''],
    ];
    const targets = [
      { metric: 'randwrite4k', ratio: def.randwrite4k.iops / ref.randwrite4k.iops },
      { metric: 'randread4k', ratio: def.randread4k.iops / ref.randread4k.iops },
    ].map((t) => ({ ...t, required: TARGET, met: t.ratio >= TARGET }));
    if (values.json) {
      console.log(JSON.stringify({ size, runtime, versions: { nbdkit: firstLine('nbdkit', ['--version']) }, results, targets }, null, 2));
    } else {
      console.log(`\nCopy-on-write benchmark: ${fmt(size / MiB)} MiB base, fio ${runtime} s per job, ${os.cpus().length} CPUs\n`);
      console.log(table(rows));
      console.log('\nTargets (rebound with the default block size vs nbdkit cow):');
      for (const t of targets) console.log(`  ${t.metric}: ${t.ratio.toFixed(2)}x (need >= ${t.required}x)  ${t.met ? 'met' : 'NOT met'}`);
      console.log('\nServers:');
      for (const v of variants) console.log(`  ${v.name.padEnd(12)} ${results[v.name].command}`);
      console.log('\nThe base image is unchanged (sha256 checked).');
    }
    clearTimeout(watchdog);
    return values.check && targets.some((t) => !t.met) ? 1 : 0;
  } finally {
    killAllSync();
    removeTmpSync();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`cow bench: ${err instanceof Error ? err.message : err}\n`);
    process.exit(1);
  },
);
