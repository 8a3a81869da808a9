#!/usr/bin/env node
/**
 * Instant recovery benchmark, rebound against the references in one run:
 *
 *   node tools/bench/recovery.mjs [--size 1G] [--sparse-size 1T] [--boots 2] [--json] [--check]
 *
 *   1. time to a usable export: POST /v1/sessions (rebound recover) until the first 4 KiB read of
 *      the session export answers, for a --size restore point with VM-like content and for a
 *      --sparse-size (sparse) one. Target < 1 s for both.
 *   2. guest boot (tools/guest: kernel + busybox initramfs + ext4 disk, QEMU TCG, mount, unmount,
 *      power off) with its disk on a session export vs on `nbdkit --filter=cow file` of the same raw
 *      image. Best of --boots each, interleaved. Target rebound <= 1.2x nbdkit.
 *   3. migration of the --size session (rebound migrate, until in step) to production storage of
 *      each --targets kind: a raw file, and a raw file served by `qemu-nbd` (the case) vs
 *      `qemu-img convert -O raw` of the same raw image to the same kind of target (`-n` into
 *      qemu-nbd). Best of --rounds each, alternating, with the daemon's CPU seconds. Target >= 0.8x.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  api, bootGuestOnce as bootOnce, cpuSeconds, fmt, GiB, killAllSync, log, MiB, pathFlags, REBOUND_MAIN, removeTmpSync, rebound, ROOT, run, setTmpDir, settleBeforeTimedCopy, startServer, stopServer, table, which, writeVmImage,
  useDaemonToken,
} from './lib.mjs';

const USAGE = `usage: node tools/bench/recovery.mjs [options]
  --size SIZE          restore point size for recover time and migration (default 1G)
  --sparse-size SIZE   the sparse restore point (default 1T)
  --boots N            guest boots per server (default 2)
  --targets LIST       migration targets: file, nbd (qemu-nbd), or both (default file,nbd)
  --rounds N           migrations per target and side (default 2)
  --json               print JSON
  --check              exit 1 when a target is missed
  -h, --help`;

/** POST /v1/sessions, then the first 4 KiB read through NBD; milliseconds of each. */
async function timeRecover(ctx, vm, name) {
  const { NbdClient } = await import(path.join(ROOT, 'dist/nbd/client.js'));
  const t0 = performance.now();
  await api(ctx.http, 'POST', '/v1/sessions', { vm, name });
  const t1 = performance.now();
  const c = await NbdClient.connect(`nbd+unix:///session/${name}/disk0?socket=${ctx.sock}`);
  await c.read(Buffer.alloc(4096), 0);
  const t2 = performance.now();
  await c.close();
  return { recoverMs: t1 - t0, firstReadMs: t2 - t1, usableMs: t2 - t0 };
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      'sparse-size': { type: 'string', default: '1T' },
      boots: { type: 'string', default: '2' },
      targets: { type: 'string', default: 'file,nbd' },
      rounds: { type: 'string', default: '2' },
      json: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return void console.log(USAGE);
  if (!fs.existsSync(REBOUND_MAIN)) throw new Error(`${REBOUND_MAIN} is missing: run 'npm run build' first`);
  for (const t of ['nbdkit', 'qemu-img', 'qemu-nbd', 'qemu-system-x86_64', 'nbdinfo']) if (!which(t)) throw new Error(`${t} is not installed (tools/setup.sh)`);
  const { parseSize } = await import(path.join(ROOT, 'dist/util/size.js'));
  const size = parseSize(values.size);
  const sparseSize = parseSize(values['sparse-size']);
  const boots = Number(values.boots);
  const targets = values.targets.split(',').filter(Boolean);
  if (!targets.length || targets.some((t) => t !== 'file' && t !== 'nbd')) throw new Error(`--targets: file and/or nbd (got ${values.targets})`);
  const rounds = Math.max(1, Number(values.rounds) || 2);

  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-bench-recovery-'));
  setTmpDir(tmpDir);
  const R = { size, sparseSize };
  const sock = path.join(tmpDir, 'rebound.sock');
  const data = path.join(tmpDir, 'data');
  const server = await startServer({
    name: 'rebound', cmd: process.execPath, args: [REBOUND_MAIN, 'serve', '--data', data, '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', ...pathFlags(), '--source-dir', path.join(ROOT, 'test-results/guest')],
    sock, uri: `nbd+unix:///?socket=${sock}`, dir: tmpDir,
    ready: (_s, text) => /HTTP API: (http:\/\/[^/\s]+)\//.exec(text)?.[1],
  });
  useDaemonToken(data);
  const ctx = { http: server.ready, sock };
  try {
    // ---- 1. time to a usable export ------------------------------------------------------
    const img = path.join(tmpDir, 'vm.raw');
    log(`writing a ${fmt(size / MiB)} MiB VM-like image and backing it up`);
    writeVmImage(img, size);
    await rebound(ctx.http, ['backup', 'big', '--disk', `disk0=${img}`]);
    const sparse = path.join(tmpDir, 'sparse.raw');
    fs.writeFileSync(sparse, '');
    fs.truncateSync(sparse, sparseSize);
    const fd = fs.openSync(sparse, 'r+');
    for (const off of [0, sparseSize / 2, sparseSize - MiB]) fs.writeSync(fd, Buffer.alloc(MiB, 0x5a), 0, MiB, off);
    fs.closeSync(fd);
    log(`backing up a ${fmt(sparseSize / GiB)} GiB sparse image through qemu-nbd (holes skipped by block status)`);
    const qsock = path.join(tmpDir, 'q.sock');
    const q = await startServer({ name: 'qemu-nbd', cmd: 'qemu-nbd', args: ['-r', '-f', 'raw', '-k', qsock, '-t', sparse], sock: qsock, uri: `nbd+unix:///?socket=${qsock}`, dir: tmpDir });
    await rebound(ctx.http, ['backup', 'huge', '--disk', `disk0=nbd+unix:///?socket=${qsock}`]);
    await stopServer(q);
    R.recover = {};
    for (const [vm, label] of [['big', values.size], ['huge', values['sparse-size']]]) {
      const runs = [];
      for (let i = 0; i < 3; i++) {
        runs.push(await timeRecover(ctx, vm, `${vm}-${i}`));
        await api(ctx.http, 'DELETE', `/v1/sessions/${vm}-${i}`);
      }
      R.recover[label] = runs.reduce((a, b) => (b.usableMs < a.usableMs ? b : a));
      log(`recover ${label}: usable after ${fmt(R.recover[label].usableMs, 1)} ms`);
    }

    // ---- 2. guest boot: session export vs nbdkit cow -------------------------------------
    const guestDir = path.join(ROOT, 'test-results/guest');
    log('building the test guest if needed (tools/guest/build.sh)');
    await run('bash', [path.join(ROOT, 'tools/guest/build.sh'), guestDir], { timeoutMs: 600_000 });
    await rebound(ctx.http, ['backup', 'guest', '--disk', `disk0=${path.join(guestDir, 'disk.img')}`]);
    R.boot = { rebound: [], nbdkit: [] };
    for (let i = 0; i < boots; i++) {
      await api(ctx.http, 'POST', '/v1/sessions', { vm: 'guest', name: `boot-${i}` });
      R.boot.rebound.push(await bootOnce(guestDir, `nbd+unix:///session/boot-${i}/disk0?socket=${sock}`));
      await api(ctx.http, 'DELETE', `/v1/sessions/boot-${i}`);
      const ksock = path.join(tmpDir, `k${i}.sock`);
      const k = await startServer({ name: 'nbdkit', cmd: 'nbdkit', args: ['-f', '-U', ksock, '--filter=cow', 'file', path.join(guestDir, 'disk.img')], sock: ksock, uri: `nbd+unix:///?socket=${ksock}`, dir: tmpDir });
      R.boot.nbdkit.push(await bootOnce(guestDir, `nbd+unix:///?socket=${ksock}`));
      await stopServer(k);
      log(`boot #${i + 1}: rebound ${fmt(R.boot.rebound.at(-1) / 1000, 2)} s, nbdkit cow ${fmt(R.boot.nbdkit.at(-1) / 1000, 2)} s`);
    }
    R.boot.best = { rebound: Math.min(...R.boot.rebound), nbdkit: Math.min(...R.boot.nbdkit) };
    R.boot.ratio = R.boot.best.rebound / R.boot.best.nbdkit;

    // ---- 3. migration vs qemu-img convert, to a file and to qemu-nbd ---------------------
    // Both copies end with the target's data on disk: rebound's migration flushes its target
    // before it reports progress, qemu-img convert flushes at its end.
    R.migrate = {};
    for (const kind of targets) {
      const M = (R.migrate[kind] = { rebound: [], convert: [] });
      const out = path.join(tmpDir, 'target.raw');
      for (let i = 0; i < rounds; i++) {
        // rebound first, then the reference, on a fresh target of the same kind each time.
        for (const who of ['rebound', 'convert']) {
          fs.rmSync(out, { force: true });
          let q;
          let to = out;
          if (kind === 'nbd') {
            fs.writeFileSync(out, '');
            fs.truncateSync(out, size);
            const qsock = path.join(tmpDir, `qt-${i}-${who}.sock`);
            q = await startServer({ name: 'qemu-nbd', cmd: 'qemu-nbd', args: ['-f', 'raw', '-t', '-k', qsock, out], sock: qsock, uri: `nbd+unix:///?socket=${qsock}`, dir: tmpDir, logName: `qemu-nbd-target-${i}-${who}` });
            to = q.uri;
          }
          // No writeback of earlier steps (the image, the backup, the last copy) competes with this one,
          // and both sides start on the same memory (lib.mjs settleBeforeTimedCopy).
          await settleBeforeTimedCopy(tmpDir, Math.ceil((size * 1.25) / MiB) * MiB);
          try {
            if (who === 'rebound') {
              const name = `mig-${kind}-${i}`;
              await api(ctx.http, 'POST', '/v1/sessions', { vm: 'big', name });
              const cpu0 = cpuSeconds(server.pid);
              const t0 = performance.now();
              const job = await api(ctx.http, 'POST', `/v1/sessions/${name}/migrate`, { to });
              let j = job;
              while (j.state === 'running') j = await api(ctx.http, 'GET', `/v1/jobs/${job.id}?waitMs=1000`);
              if (j.state !== 'succeeded') throw new Error(`migration: ${JSON.stringify(j.error)}`);
              const s = (performance.now() - t0) / 1000;
              M.rebound.push({ seconds: s, mibps: size / MiB / s, cpuSeconds: cpuSeconds(server.pid) - cpu0 });
              await api(ctx.http, 'DELETE', `/v1/sessions/${name}`);
            } else {
              const c = await run('qemu-img', ['convert', ...(kind === 'nbd' ? ['-n'] : []), '-f', 'raw', '-O', 'raw', '-t', 'writeback', img, to], { timeoutMs: 600_000 });
              M.convert.push({ seconds: c.seconds, mibps: size / MiB / c.seconds });
              M.convertCommand = `qemu-img convert ${kind === 'nbd' ? '-n ' : ''}-f raw -O raw -t writeback IMAGE ${kind === 'nbd' ? 'nbd+unix:///?socket=QEMU-NBD' : 'FILE'}`;
            }
          } finally {
            if (q) await stopServer(q);
          }
          if (who === 'rebound' && i === 0) await run('cmp', [out, img], { timeoutMs: 300_000 });
        }
        log(`migration to ${kind} #${i + 1}: rebound ${fmt(M.rebound.at(-1).mibps)} MiB/s (${fmt(M.rebound.at(-1).cpuSeconds, 2)} CPU s), qemu-img convert ${fmt(M.convert.at(-1).mibps)} MiB/s`);
      }
      const best = (xs) => xs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
      M.best = { rebound: best(M.rebound), convert: best(M.convert) };
      M.ratio = M.best.rebound.mibps / M.best.convert.mibps;
    }
  } finally {
    await stopServer(server);
  }

  R.targets = {
    recoverUnder1s: Object.values(R.recover).every((r) => r.usableMs < 1000),
    bootWithin1_2x: R.boot.ratio <= 1.2,
    migrationAtLeast0_8x: Object.values(R.migrate).every((m) => m.ratio >= 0.8),
  };
  if (values.json) console.log(JSON.stringify(R, null, 2));
  else {
    console.log('\ntime to a usable export (POST /v1/sessions -> first 4 KiB read), best of 3');
    console.log(table([['restore point', 'recover ms', 'first read ms', 'usable ms'],
      ...Object.entries(R.recover).map(([k, r]) => [k, fmt(r.recoverMs, 1), fmt(r.firstReadMs, 1), fmt(r.usableMs, 1)])]));
    console.log('\nguest boot to power-off (QEMU TCG), best of', boots);
    console.log(table([['disk on', 'seconds'], ['rebound session export', fmt(R.boot.best.rebound / 1000, 2)], ['nbdkit --filter=cow file', fmt(R.boot.best.nbdkit / 1000, 2)], ['ratio (lower is better)', fmt(R.boot.ratio, 2)]]));
    console.log(`\nmigration of ${fmt(size / MiB)} MiB (until in step), best of ${rounds}; the reference is qemu-img convert of the raw image to the same kind of target`);
    console.log(table([['target', 'rebound MiB/s', 'daemon CPU s', 'CPU s per GiB', 'qemu-img convert MiB/s', 'ratio'],
      ...Object.entries(R.migrate).map(([kind, m]) => [kind === 'nbd' ? 'qemu-nbd (raw file)' : 'file', fmt(m.best.rebound.mibps), fmt(m.best.rebound.cpuSeconds, 2), fmt(m.best.rebound.cpuSeconds / (size / GiB), 2), fmt(m.best.convert.mibps), fmt(m.ratio, 2)])]));
    console.log(`\ntargets: recover < 1 s ${R.targets.recoverUnder1s ? 'met' : 'MISSED'}; boot <= 1.2x ${R.targets.bootWithin1_2x ? 'met' : 'MISSED'}; migration >= 0.8x ${R.targets.migrationAtLeast0_8x ? 'met' : 'MISSED'}`);
  }
  return values.check && Object.values(R.targets).some((t) => !t) ? 1 : 0;
}

main().then(
  (code) => {
    removeTmpSync();
    process.exit(code);
  },
  (err) => {
    console.error(`bench/recovery: ${err.stack ?? err}`);
    killAllSync();
    removeTmpSync();
    process.exit(2);
  },
);
