#!/usr/bin/env node
/**
 * Verification boot benchmark, rebound against the reference in one run:
 *
 *   node tools/bench/verify.mjs [--runs 3] [--memory 192M] [--accel tcg] [--json] [--check]
 *
 * The disk-bootable test guest (tools/guest/build-disk.sh: MBR, SYSLINUX, kernel, busybox
 * initramfs with httpd on port 80) is backed up once. Then, interleaved, --runs times each:
 *   rebound:   `rebound verify guest --boot --expect-serial REBOUND-BOOTED --tcp 80`, wall time
 *              from the command's start to its exit with the verdict (CLI, API, job, pin,
 *              overlay, NBD, QEMU, signals, screenshot, clean-up: everything);
 *   reference: qemu-system-x86_64 with the same machine (accel, memory, virtio disk, user network
 *              with the port forwarded) booting a local copy of the same raw image, from spawn
 *              until the same two signals are seen (the serial marker, then an HTTP answer on the
 *              forwarded port).
 * Target: best rebound time <= 1.2 x best reference time. The machine's load average is printed
 * with the figures: TCG boots are CPU-bound and slow down with everything else running.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fmt, killAllSync, children, log, pathFlags, REBOUND_MAIN, removeTmpSync, rebound, ROOT, run, setTmpDir, sleep, startServer, stopServer, table, which, useDaemonToken } from './lib.mjs';

const USAGE = `usage: node tools/bench/verify.mjs [options]
  --runs N         verifications and reference boots, interleaved (default 3)
  --memory SIZE    guest memory (default 192M)
  --accel A        tcg or kvm for both (default tcg)
  --json           print JSON
  --check          exit 1 when the target is missed
  -h, --help`;

const MARKER = 'REBOUND-BOOTED';

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** One HTTP answer from 127.0.0.1:port (any status line), or false. */
function httpAnswers(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (v) => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done(false), 5000);
    s.on('connect', () => s.write('HEAD / HTTP/1.0\r\n\r\n'));
    s.on('data', () => done(true));
    s.on('error', () => done(false));
    s.on('close', () => done(false));
  });
}

/** The reference: QEMU on a local raw file, spawn -> marker on the serial console -> HTTP answer. */
async function referenceBoot(image, memoryMiB, accel) {
  const port = await freePort();
  const args = ['-machine', `pc,accel=${accel}`, '-m', `${memoryMiB}M`, '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'std', '-no-reboot',
    '-serial', 'stdio', '-drive', `file=${image},format=raw,if=virtio,cache=writeback`,
    '-netdev', `user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:${port}-:80`, '-device', 'virtio-net-pci,netdev=net0'];
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let exited = false;
  child.on('exit', () => ((exited = true), children.delete(child)));
  child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
  try {
    for (let i = 0; i < 12_000 && !out.includes(MARKER); i++) {
      if (exited) throw new Error(`reference QEMU exited:\n${out.slice(-1500)}`);
      await sleep(50);
    }
    if (!out.includes(MARKER)) throw new Error('reference boot: no marker');
    const markerMs = performance.now() - t0;
    for (let i = 0; i < 600; i++) {
      if (await httpAnswers(port)) return { ms: performance.now() - t0, markerMs };
      await sleep(200);
    }
    throw new Error('reference boot: port 80 never answered');
  } finally {
    child.kill('SIGKILL');
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      memory: { type: 'string', default: '192M' },
      accel: { type: 'string', default: 'tcg' },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return void console.log(USAGE);
  if (!fs.existsSync(REBOUND_MAIN)) throw new Error(`${REBOUND_MAIN} is missing: run 'npm run build' first`);
  for (const t of ['qemu-system-x86_64', 'syslinux', 'mcopy']) if (!which(t)) throw new Error(`${t} is not installed (tools/setup.sh)`);
  const { parseSize } = await import(path.join(ROOT, 'dist/util/size.js'));
  const memoryMiB = Math.round(parseSize(values.memory) / 2 ** 20);
  const runs = Number(values.runs);
  await run('bash', [path.join(ROOT, 'tools/guest/build-disk.sh')], { timeoutMs: 300_000 });
  const guestDir = path.join(ROOT, 'test-results/guest-boot');

  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-bench-verify-'));
  setTmpDir(tmpDir);
  const image = path.join(tmpDir, 'local.img');
  fs.copyFileSync(path.join(guestDir, 'disk.img'), image);
  const data = path.join(tmpDir, 'data');
  const server = await startServer({
    name: 'rebound', cmd: process.execPath, args: [REBOUND_MAIN, 'serve', '--data', data, '--nbd', 'none', '--http', '127.0.0.1:0', '--verify-accel', values.accel, ...pathFlags(), '--source-dir', guestDir],
    dir: tmpDir,
    ready: (_s, text) => /HTTP API: (http:\/\/[^/\s]+)\//.exec(text)?.[1],
  });
  useDaemonToken(data);
  const http = server.ready;
  const R = { runs, memoryMiB, accel: values.accel, cpus: os.cpus().length, loadBefore: os.loadavg(), rebound: [], reference: [] };
  try {
    await rebound(http, ['backup', 'guest', '--disk', `sda=${path.join(guestDir, 'disk.img')}`]);
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const v = await rebound(http, ['verify', 'guest', '--boot', '--memory', `${memoryMiB}M`, '--expect-serial', MARKER, '--tcp', '80', '--timeout', '900'], 1_000_000);
      const ms = performance.now() - t0;
      if (!v.ok) throw new Error(`verification failed: ${v.reasons.join('; ')}`);
      R.rebound.push({ ms, jobMs: v.durationMs, timings: v.timings, markerMs: v.signals.serial.atMs });
      const ref = await referenceBoot(image, memoryMiB, values.accel);
      R.reference.push(ref);
      const t = v.timings;
      log(
        `run ${i + 1}: rebound verify ${fmt(ms / 1000, 2)} s (job ${fmt(v.durationMs / 1000, 2)} s: prepare ${fmt(t.prepareMs / 1000, 2)}, ` +
          `guest to signals ${fmt(t.signalsMs / 1000, 2)} (marker at ${fmt(v.signals.serial.atMs / 1000, 2)}), verdict ${fmt(t.finishMs / 1000, 2)}), ` +
          `reference boot ${fmt(ref.ms / 1000, 2)} s (marker at ${fmt(ref.markerMs / 1000, 2)}), load ${os.loadavg()[0].toFixed(2)}`,
      );
    }
  } finally {
    await stopServer(server);
  }
  R.loadAfter = os.loadavg();
  const best = (xs) => Math.min(...xs.map((x) => x.ms));
  const median = (xs) => {
    const s = xs.map((x) => x.ms).sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  };
  R.best = { rebound: best(R.rebound), reference: best(R.reference) };
  R.median = { rebound: median(R.rebound), reference: median(R.reference) };
  R.ratio = R.best.rebound / R.best.reference;
  R.medianRatio = R.median.rebound / R.median.reference;
  R.targets = { within1_2x: R.ratio <= 1.2 };
  if (values.json) console.log(JSON.stringify(R, null, 2));
  else {
    console.log(`\ncommand -> verdict vs direct boot to the same signals (QEMU ${values.accel}, ${memoryMiB} MiB), ${runs} runs each, interleaved`);
    console.log(table([
      ['', 'best s', 'median s'],
      ['rebound verify --boot (command to verdict)', fmt(R.best.rebound / 1000, 2), fmt(R.median.rebound / 1000, 2)],
      ['qemu-system-x86_64 on a local file (spawn to marker + HTTP)', fmt(R.best.reference / 1000, 2), fmt(R.median.reference / 1000, 2)],
      ['ratio (lower is better)', fmt(R.ratio, 2), fmt(R.medianRatio, 2)],
    ]));
    console.log(`load average before ${R.loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${R.loadAfter.map((l) => l.toFixed(2)).join(' ')} (${R.cpus} CPUs)`);
    console.log(`target: <= 1.2x ${R.targets.within1_2x ? 'met' : 'MISSED'}`);
  }
  return values.check && !R.targets.within1_2x ? 1 : 0;
}

main().then(
  (code) => {
    removeTmpSync();
    process.exit(code);
  },
  (err) => {
    console.error(`bench/verify: ${err.stack ?? err}`);
    killAllSync();
    removeTmpSync();
    process.exit(2);
  },
);
