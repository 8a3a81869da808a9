#!/usr/bin/env node
// Long fuzz runs: tools/fuzz/run.mjs TARGET [--runs N] [--seed S] [--path P] [--stall-ms MS] [--daemon]
//
// --daemon (nbd, nfs): fuzz a `rebound serve` process instead of an in-process server (dist/ must be
// built), and report its RSS (test/fuzz/daemon.ts).
//
// Loads the TypeScript target from test/fuzz/targets/ through vite (already a dev dependency; the
// same transform vitest uses), runs N seeded inputs, prints inputs/s every few seconds and a JSON
// summary (inputs, failures, hangs, RSS before/after). The run happens in a child process that
// reports its progress; if the counter stalls for --stall-ms (default 30 s) the parent kills it
// and reports a hang with the seed and the input number (a synchronous endless loop cannot be
// interrupted from inside). Exit status: 0 clean, 1 oracle failure, 2 hang, 3 usage.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TARGETS } from './targets.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function parseArgs(argv) {
  const o = { runs: 100_000, seed: Date.now() % 2 ** 31, path: undefined, stallMs: 30_000, child: false, daemon: false };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--runs') o.runs = Number(argv[++i]);
    else if (a === '--seed') o.seed = Number(argv[++i]);
    else if (a === '--path') o.path = argv[++i];
    else if (a === '--stall-ms') o.stallMs = Number(argv[++i]);
    else if (a === '--child') o.child = true;
    else if (a === '--daemon') o.daemon = true;
    else rest.push(a);
  }
  o.target = rest[0];
  return o;
}

const opts = parseArgs(process.argv.slice(2));
if (!TARGETS[opts.target] || !Number.isSafeInteger(opts.runs) || opts.runs <= 0 || !Number.isSafeInteger(opts.seed)) {
  console.error(`usage: tools/fuzz/run.mjs TARGET --runs N --seed S [--path P]\ntargets: ${Object.keys(TARGETS).join(', ')}`);
  process.exit(3);
}

if (opts.child) await child();
else await parent();

async function child() {
  const { createServer } = await import('vite');
  const vite = await createServer({
    root: ROOT,
    configFile: false,
    logLevel: 'error',
    appType: 'custom',
    server: { middlewareMode: true, hmr: false, ws: false, watch: null },
    optimizeDeps: { noDiscovery: true, include: [] },
  });
  const [file, factory] = TARGETS[opts.target];
  const lib = await vite.ssrLoadModule(path.join(ROOT, 'test/fuzz/lib.ts'));
  const mod = await vite.ssrLoadModule(path.join(ROOT, 'test/fuzz/targets', file));
  const target = mod[factory]();
  const send = (m) => process.send?.(m);
  let last = 0;
  const result = await lib.runFuzz(target, {
    runs: opts.runs,
    seed: opts.seed,
    path: opts.path,
    onProgress: (n) => {
      const now = Date.now();
      if (now - last >= 1000) {
        last = now;
        send({ progress: n, rss: process.memoryUsage().rss });
      }
    },
  });
  send({ oracle: target.oracle, result });
  await vite.close();
  process.exit(0);
}

async function parent() {
  const env = opts.daemon ? { ...process.env, REBOUND_FUZZ_DAEMON: '1' } : process.env;
  // Daemon mode: the child reaches the daemon's inspector to settle its memory (test/fuzz/daemon.ts).
  const nodeFlags = opts.daemon ? ['--experimental-websocket'] : [];
  const c = spawn(process.execPath, [...nodeFlags, fileURLToPath(import.meta.url), ...process.argv.slice(2), '--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env });
  const t0 = Date.now();
  let done = 0;
  let lastChange = Date.now();
  let lastPrint = 0;
  let final;
  c.on('message', (m) => {
    if (m.result) final = m;
    if (m.progress !== undefined) {
      if (m.progress !== done) lastChange = Date.now();
      done = m.progress;
      if (Date.now() - lastPrint >= 5000) {
        lastPrint = Date.now();
        const s = (Date.now() - t0) / 1000;
        console.error(`${opts.target}: ${done} inputs, ${Math.round(done / s)}/s, rss ${Math.round(m.rss / 2 ** 20)} MiB`);
      }
    }
  });
  const watchdog = setInterval(() => {
    if (Date.now() - lastChange > opts.stallMs) {
      console.error(`${opts.target}: no progress for ${opts.stallMs} ms after input ${done}: hang (seed ${opts.seed})`);
      c.kill('SIGKILL');
    }
  }, 1000);
  const code = await new Promise((r) => c.on('exit', (code, sig) => r(code ?? sig)));
  clearInterval(watchdog);
  if (!final) {
    console.log(JSON.stringify({ target: opts.target, seed: opts.seed, inputs: done, hang: true, exit: code }, null, 2));
    process.exit(2);
  }
  const r = final.result;
  const summary = {
    target: r.target,
    oracle: final.oracle,
    seed: r.seed,
    inputs: r.runs,
    seconds: Math.round(r.ms / 100) / 10,
    inputsPerSecond: Math.round(r.runs / (r.ms / 1000)),
    livenessChecks: r.livenessChecks,
    failures: r.failure ? 1 : 0,
    hangs: r.failure?.includes('hang:') ? 1 : 0,
    rssBeforeMiB: Math.round(r.rssBefore / 2 ** 20),
    rssAfterMiB: Math.round(r.rssAfter / 2 ** 20),
    mode: opts.daemon ? 'daemon' : 'in-process',
    ...(r.report ?? {}),
  };
  console.log(JSON.stringify(summary, null, 2));
  if (r.failure) console.log(r.failure);
  process.exit(r.failure ? 1 : 0);
}
