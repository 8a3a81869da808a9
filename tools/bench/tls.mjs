#!/usr/bin/env node
/**
 * NBD over TLS: rebound against nbdkit, same image, same clients, both in `--tls require`.
 *
 *   node tools/bench/tls.mjs [--size 1G] [--runtime 10] [--no-plain] [--json] [--check]
 *
 * One run: writes a fully allocated raw image, warms the page cache, makes a CA and a server
 * certificate with openssl, and serves the image read-only on Unix sockets:
 *   rebound-tls   rebound serve ... --export bench=IMG --tls require --tls-certificates DIR
 *   nbdkit-tls    nbdkit -r --tls=require --tls-certificates=DIR file IMG
 * and, unless --no-plain, the same two without TLS (to show what TLS itself costs each server).
 * Metrics, each run against every server before the next starts:
 *   - nbdcopy nbds+unix://...&tls-certificates=DIR null:   whole image, MiB/s
 *   - fio --ioengine=nbd 4 KiB randread qd32                 IOPS
 * each --rounds times (default 3) against every server in turn, after one untimed nbdcopy per server
 * (roundRobin in lib.mjs says why); tables show each server's best round, targets also the medians.
 * fio's nbd engine cannot read local files from its URI (libnbd refuses tls-certificates= there
 * unless the program allows it, and fio does not), so fio connects with `tls-verify-peer=false`:
 * the traffic is encrypted the same way, only the client does not check the server's certificate.
 * Servers do not ask for client certificates (that changes the handshake, not the data path).
 *
 * Target (issue 12): rebound-tls >= 0.9x nbdkit-tls on both metrics. Each server's CPU time per
 * GiB / per request (from /proc) is reported too: on a 2-core machine it is the steadier figure.
 * The report also counts rebound's TLS connections by record layer (its own after a TLS 1.3
 * handshake, or Node's TLS socket). On a busy machine run it under `chrt -r 50`: the servers and
 * clients then get the CPUs before ordinary processes, and the figures are those of a quiet machine.
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
const TARGET = 0.9;

const USAGE = `usage: node tools/bench/tls.mjs [options]
  --size SIZE      image size (default 1G; K, M, G suffixes)
  --runtime SEC    duration of the fio job (default 10)
  --rounds N       rounds of each metric against every server (default 3)
  --no-plain       skip the plain-text (no TLS) baselines
  --rebound-node-args=ARGS  extra node flags for the rebound processes (space-separated), e.g.
                   "--cpu-prof --cpu-prof-dir=/tmp/prof"
  --json           print the results as JSON
  --check          exit 1 when a target is not met
  --tmpdir DIR     parent of the temp dir (default ${os.tmpdir()})
  -h, --help`;

async function makeCerts(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const o = (args) => run('openssl', args, { timeoutMs: 30_000 });
  const f = (n) => path.join(dir, n);
  await o(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', f('ca-key.pem')]);
  await o(['req', '-x509', '-new', '-key', f('ca-key.pem'), '-sha256', '-days', '1', '-subj', '/CN=bench CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', f('ca-cert.pem')]);
  await o(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', f('server-key.pem')]);
  fs.chmodSync(f('server-key.pem'), 0o600);
  await o(['req', '-new', '-key', f('server-key.pem'), '-subj', '/CN=localhost', '-out', f('server.csr')]);
  fs.writeFileSync(f('server.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n');
  await o(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca-cert.pem'), '-CAkey', f('ca-key.pem'), '-CAcreateserial', '-days', '1',
    '-sha256', '-extfile', f('server.ext'), '-out', f('server-cert.pem')]);
  // What a client needs to trust the server: the CA alone.
  const clientDir = path.join(dir, 'client');
  fs.mkdirSync(clientDir);
  fs.copyFileSync(f('ca-cert.pem'), path.join(clientDir, 'ca-cert.pem'));
  return { serverDir: dir, clientDir };
}

function servers({ image, dir, certs, plain, reboundNodeArgs }) {
  const sock = (n) => path.join(dir, `${n}.sock`);
  const rebound = (n, tlsArgs) => ({
    name: n,
    cmd: process.execPath,
    args: [...reboundNodeArgs, REBOUND_MAIN, 'serve', '--data', path.join(dir, `${n}-data`), '--nbd', 'none', '--nbd-socket', sock(n), '--http', 'off',
      '--export', `${EXPORT_NAME}=${image}`, ...tlsArgs],
    sock: sock(n),
  });
  const nbdkit = (n, tlsArgs) => ({ name: n, cmd: 'nbdkit', args: ['-r', '-f', '--exit-with-parent', '-U', sock(n), ...tlsArgs, 'file', image], sock: sock(n) });
  const list = [
    { ...rebound('rebound-tls', ['--tls', 'require', '--tls-certificates', certs.serverDir]), tls: true },
    { ...nbdkit('nbdkit-tls', ['--tls=require', `--tls-certificates=${certs.serverDir}`]), tls: true },
  ];
  if (plain) list.push({ ...rebound('rebound-plain', []), tls: false }, { ...nbdkit('nbdkit-plain', []), tls: false });
  for (const s of list) {
    const q = `socket=${encodeURIComponent(s.sock)}`;
    s.uri = s.tls ? `nbds+unix:///${EXPORT_NAME}?${q}&tls-certificates=${certs.clientDir}` : `nbd+unix:///${EXPORT_NAME}?${q}`;
    s.fioUri = s.tls ? `nbds+unix:///${EXPORT_NAME}?${q}&tls-verify-peer=false` : s.uri;
  }
  return list;
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      runtime: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '3' },
      'no-plain': { type: 'boolean', default: false },
      'rebound-node-args': { type: 'string', default: '' },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      tmpdir: { type: 'string', default: os.tmpdir() },
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
  for (const tool of ['nbdinfo', 'nbdcopy', 'fio', 'nbdkit', 'openssl']) {
    if (!which(tool)) throw new Error(`${tool} is not installed (tools/setup.sh installs it)`);
  }

  const plain = !values['no-plain'];
  const budgetMs = (300 + (plain ? 4 : 2) * ((rounds + 1) * (60 + size / (10 * MiB)) + rounds * (runtime + 60))) * 1000;
  const watchdog = setTimeout(() => {
    log(`run exceeded its time limit of ${Math.round(budgetMs / 1000)} s; aborting`);
    process.exit(3);
  }, budgetMs);

  const tmpDir = fs.mkdtempSync(path.join(values.tmpdir, 'rebound-bench-'));
  setTmpDir(tmpDir);
  const image = path.join(tmpDir, 'image.raw');
  log(`writing a ${fmt(size / MiB)} MiB image to ${image}`);
  writeImage(image, size);
  const devNull = fs.openSync('/dev/null', 'w');
  try {
    await run('cat', [image], { stdout: devNull, timeoutMs: 120_000 });
  } finally {
    fs.closeSync(devNull);
  }
  const certs = await makeCerts(path.join(tmpDir, 'certs'));

  const started = [];
  try {
    for (const spec of servers({ image, dir: tmpDir, certs, plain, reboundNodeArgs: values['rebound-node-args'].split(/\s+/).filter(Boolean) })) {
      log(`starting ${spec.name}`);
      const s = await startServer({ name: spec.name, cmd: spec.cmd, args: spec.args, sock: spec.sock, uri: spec.uri, dir: tmpDir });
      if (s.exportSize !== size) throw new Error(`${spec.name} reports size ${s.exportSize}, expected ${size}`);
      const info = await run('nbdinfo', [spec.uri], { timeoutMs: 10_000 });
      if (spec.tls !== /with TLS/.test(info.stdout)) throw new Error(`${spec.name}: TLS is ${spec.tls ? 'off' : 'on'}, expected the opposite`);
      s.fioUri = spec.fioUri;
      s.tls = spec.tls;
      log(`  ${s.commandLine}`);
      started.push(s);
    }

    const results = Object.fromEntries(started.map((s) => [s.name, { command: s.commandLine, uri: s.uri }]));
    // Each metric against every server, round by round (after one untimed nbdcopy each: see roundRobin in lib.mjs).
    const copies = await roundRobin(started, {
      label: 'nbdcopy',
      rounds,
      measure: (s) => measureNbdcopy(s, size, { timeoutMs: 60_000 + (size / (10 * MiB)) * 1000 }),
      score: (r) => r.mibps,
      describe: (r) => `${fmt(r.mibps)} MiB/s, server ${fmt(r.serverCpuSecPerGiB, 2)} CPU s/GiB`,
    });
    const reads = await roundRobin(started, {
      label: `fio 4K randread qd32 (${runtime} s)`,
      rounds,
      warmup: false,
      measure: (s) => measureFio({ ...s, uri: s.fioUri }, { name: 'rr', rw: 'randread', bs: '4k', iodepth: 32, runtime }),
      score: (r) => r.iops,
      describe: (r) => `${fmt(r.iops)} IOPS, server ${fmt(r.serverCpuUsPerIo, 1)} CPU us/read`,
    });
    for (const s of started) {
      const c = copies[s.name];
      const f = reads[s.name];
      results[s.name].nbdcopy = { ...c.best, medianMibps: c.median.mibps, runs: c.runs.map((r) => r.mibps) };
      results[s.name].randread4k = { ...f.best, median: f.median.iops, runs: f.runs.map((r) => r.iops) };
    }

    const metrics = [
      { key: 'nbdcopy', label: `nbdcopy whole image, MiB/s (best of ${rounds})`, pick: (r) => r.nbdcopy.mibps, median: (r) => r.nbdcopy.medianMibps, digits: 0 },
      { key: 'randread4k', label: `fio 4K randread qd32, IOPS (best of ${rounds})`, pick: (r) => r.randread4k.iops, median: (r) => r.randread4k.median, digits: 0 },
    ];
    const costs = [
      { label: 'server CPU s per GiB, nbdcopy', pick: (r) => r.nbdcopy.serverCpuSecPerGiB, digits: 2 },
      { label: 'server CPU us per 4K read', pick: (r) => r.randread4k.serverCpuUsPerIo, digits: 1 },
      { label: 'fio 4K randread p99 latency, us', pick: (r) => r.randread4k.clatP99Us, digits: 0 },
    ];
    const ratio = (a, b, pick) => (results[a] && results[b] ? pick(results[a]) / pick(results[b]) : NaN);
    const targets = metrics.map((m) => {
      const r = ratio('rebound-tls', 'nbdkit-tls', m.pick);
      return { metric: m.key, vsNbdkit: r, medianVsNbdkit: ratio('rebound-tls', 'nbdkit-tls', m.median), required: TARGET, met: r >= TARGET };
    });
    // Which record layer carried rebound's TLS connections (its log line per connection says).
    const rb = started.find((s) => s.name === 'rebound-tls');
    if (rb) {
      const logged = fs.readFileSync(rb.logFile, 'utf8');
      results[rb.name].recordsBy = logged.match(/NBD TLS enabled.*?records=("[^"]*"|\S+)/)?.[1]?.replace(/"/g, '') ?? '?';
      results[rb.name].recordLayer = { rebound: (logged.match(/records=rebound/g) ?? []).length, node: (logged.match(/records=node/g) ?? []).length };
    }
    const out = {
      config: {
        size, runtime, cpus: os.cpus().length, node: process.version,
        versions: { nbdkit: firstLine('nbdkit', ['--version']), nbdcopy: firstLine('nbdcopy', ['--version']), fio: firstLine('fio', ['--version']), openssl: firstLine('openssl', ['version']) },
      },
      servers: results,
      ratios: Object.fromEntries(metrics.map((m) => [m.key, {
        tls: ratio('rebound-tls', 'nbdkit-tls', m.pick),
        plain: ratio('rebound-plain', 'nbdkit-plain', m.pick),
        reboundTlsVsPlain: ratio('rebound-tls', 'rebound-plain', m.pick),
        nbdkitTlsVsPlain: ratio('nbdkit-tls', 'nbdkit-plain', m.pick),
      }])),
      targets,
    };
    if (values.json) {
      console.log(JSON.stringify(out, (_k, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toFixed(3)) : v), 2));
    } else {
      const cols = started.map((s) => s.name);
      const x = (v) => (Number.isNaN(v) ? 'n/a' : `${v.toFixed(2)}x`);
      const val = (name, m) => fmt(m.pick(results[name]), m.digits);
      const head = ['metric', ...cols, 'rebound/nbdkit TLS', ...(plain ? ['rebound/nbdkit plain'] : [])];
      const row = (m) => [m.label, ...cols.map((c) => val(c, m)), x(ratio('rebound-tls', 'nbdkit-tls', m.pick)), ...(plain ? [x(ratio('rebound-plain', 'nbdkit-plain', m.pick))] : [])];
      console.log(`\nNBD TLS benchmark: ${fmt(size / MiB)} MiB image, fio runtime ${runtime} s, ${os.cpus().length} CPUs, node ${process.version}\n`);
      console.log(table([head, ...metrics.map(row)]));
      console.log('\nCost (lower is better):\n');
      console.log(table([head, ...costs.map(row)]));
      console.log('\nTargets:');
      for (const t of targets) {
        const m = metrics.find((mm) => mm.key === t.metric);
        console.log(`  ${m.label}: rebound-tls/nbdkit-tls ${x(t.vsNbdkit)} (need >= ${t.required}x)  ${t.met ? 'met' : 'NOT met'}; medians ${x(t.medianVsNbdkit)}`);
      }
      if (rb) {
        const l = results[rb.name].recordLayer;
        console.log(`\nrebound-tls connections: ${l.rebound} on rebound's TLS record layer, ${l.node} on Node's TLS socket; records by ${results[rb.name].recordsBy}`);
      }
      console.log('\nServers:');
      for (const s of started) console.log(`  ${s.name.padEnd(13)} ${s.commandLine}`);
      console.log(`  clients: nbdcopy ${started[0].uri} null: ; fio --ioengine=nbd --uri=${started[0].fioUri}`);
    }
    clearTimeout(watchdog);
    return values.check && targets.some((t) => !t.met) ? 1 : 0;
  } finally {
    await Promise.all(started.map(stopServer));
    killAllSync();
    removeTmpSync();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`tls: ${err instanceof Error ? err.message : err}\n`);
    process.exit(1);
  },
);
