/**
 * A one-node Ceph RGW for tests (../shared/notes/s3-ceph-rgw.md): one monitor, one BlueStore OSD on
 * a sparse file and one radosgw, everything under a fresh temp directory, no cephx, no systemd.
 * The monitor's and radosgw's ports are picked free at start (other test files and other users of
 * the machine may run their own RGW at the same time). `stopGateway()`/`startGateway()` stop and
 * start only the radosgw (an endpoint outage; the data stays). `stop()` kills what was started.
 * Shared by the tests (test/helpers/rgw.ts) and the benchmark (tools/bench/s3.mjs); types in
 * rgw.d.mts.
 */
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

function hasCommand(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Runs a program; resolves with {code, stdout, stderr} (killed after timeoutMs). */
function run(cmd, args, { env, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => (clearTimeout(timer), reject(e)));
    child.on('close', (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
  });
}

export const RGW_ACCESS_KEY = 'REBOUNDTESTKEY';
export const RGW_SECRET_KEY = 'rebound-test-secret-key-0123456789';

export function hasRgw() {
  return ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'monmaptool', 'ceph'].every(hasCommand);
}

/** A free TCP port on 127.0.0.1 (asked of the kernel, then released). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = s.address().port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pidOf(file) {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function killPid(pid, signal = 'SIGTERM') {
  if (pid === undefined || !alive(pid)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  for (let i = 0; i < 200 && alive(pid); i++) await sleep(50);
  if (alive(pid)) {
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 100 && alive(pid); i++) await sleep(50);
  }
}

/**
 * Starts a cluster; a failed attempt stops what it started and another one runs (3 in all). One
 * start at a time on the machine (a lock file): two test files starting clusters at once raced for
 * ports, and in one CI run every attempt of one of them met the other's monitor (the OSD refused
 * with 'wrong fsid'). Running clusters do not disturb each other; only their starts are serialised.
 */
export async function startRgw() {
  const unlock = await startLock();
  try {
    for (let n = 1; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        if (n >= 3) throw err;
        console.warn(`rgw: start attempt ${n} failed, retrying: ${err.message.slice(0, 300)}`);
      }
    }
  } finally {
    unlock();
  }
}

/** Takes the machine-wide start lock (a file holding the holder's pid; a dead holder's is taken over). */
async function startLock() {
  const file = path.join(os.tmpdir(), 'rebound-rgw-start.lock');
  for (let i = 0; ; i++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      return () => fs.rmSync(file, { force: true });
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
    }
    const holder = pidOf(file);
    if (holder !== undefined && !alive(holder)) {
      fs.rmSync(file, { force: true });
      continue;
    }
    if (i >= 6000) throw new Error(`another RGW start has held ${file} for 10 minutes (pid ${holder})`);
    await sleep(100);
  }
}

async function attempt() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-rgw-'));
  const run_ = path.join(dir, 'run');
  const conf = path.join(dir, 'ceph.conf');
  const monPort = await freePort();
  const port = await freePort();
  const fsid = crypto.randomUUID();
  fs.mkdirSync(run_);
  for (const sub of ['log', 'osd.0', 'rgw.a']) fs.mkdirSync(path.join(dir, sub));
  fs.writeFileSync(
    conf,
    `[global]
fsid = ${fsid}
mon_host = v1:127.0.0.1:${monPort}
ms_bind_msgr2 = false
public_network = 127.0.0.0/8
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 5
osd_crush_chooseleaf_type = 0
run_dir = ${run_}
admin_socket = ${run_}/$name.asok
log_file = ${dir}/log/$name.log
pid_file = ${run_}/$name.pid
[mon.a]
mon_data = ${dir}/mon.a
[osd.0]
osd_data = ${dir}/osd.0
osd_objectstore = bluestore
bluestore_block_path = ${dir}/osd0.block
bluestore_block_create = true
bluestore_block_size = 8589934592
osd_memory_target = 1073741824
[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:${port} tcp_nodelay=1
rgw_data = ${dir}/rgw.a
`,
  );
  const env = { ...process.env, CEPH_CONF: conf };
  const ceph = async (cmd, args, timeoutMs = 60_000) => {
    const r = await run(cmd, args, { env, timeoutMs });
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.slice(-2000)}`);
    return r.stdout;
  };
  const stopAll = async () => {
    await killPid(pidOf(path.join(run_, 'client.rgw.a.pid')));
    await killPid(pidOf(path.join(run_, 'osd.0.pid')));
    await killPid(pidOf(path.join(run_, 'mon.a.pid')));
  };
  const startGateway = async () => {
    await ceph('radosgw', ['-n', 'client.rgw.a']);
    for (let i = 0; ; i++) {
      const ok = await fetch(`http://127.0.0.1:${port}/`).then(
        (r) => r.status > 0,
        () => false,
      );
      if (ok) return;
      if (i >= 1200) throw new Error('radosgw did not answer within 60 s');
      await sleep(50);
    }
  };
  try {
    await ceph('monmaptool', ['--create', '--addv', 'a', `[v1:127.0.0.1:${monPort}]`, '--fsid', fsid, path.join(dir, 'monmap')]);
    await ceph('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', path.join(dir, 'monmap')]);
    await ceph('ceph-mon', ['-i', 'a']);
    // The monitor forks; if its port was taken meanwhile (another cluster on this machine), the
    // answer comes from someone else's monitor: check that it is ours.
    for (let i = 0; ; i++) {
      const r = await run('ceph', ['--connect-timeout', '5', 'fsid'], { env, timeoutMs: 20_000 });
      if (r.code === 0) {
        if (r.stdout.trim() !== fsid) throw new Error(`port ${monPort} answers with another cluster's monitor (${r.stdout.trim()})`);
        break;
      }
      if (i >= 60) throw new Error(`monitor did not answer: ${r.stderr.slice(-500)}`);
      await sleep(500);
    }
    const osdUuid = crypto.randomUUID();
    let id = '';
    for (let i = 0; i < 60 && !id; i++) {
      const r = await run('ceph', ['--connect-timeout', '5', 'osd', 'new', osdUuid], { env, timeoutMs: 20_000 });
      if (r.code === 0) id = r.stdout.trim();
      else await sleep(500);
    }
    if (!/^\d+$/.test(id)) throw new Error(`ceph osd new gave '${id}'`);
    await ceph('ceph-osd', ['-i', id, '--mkfs', '--osd-uuid', osdUuid]);
    await ceph('ceph-osd', ['-i', id]);
    for (let i = 0; ; i++) {
      const r = await run('ceph', ['--connect-timeout', '5', 'osd', 'stat'], { env, timeoutMs: 20_000 });
      if (r.code === 0 && /1 up/.test(r.stdout)) break;
      if (i >= 120) throw new Error(`osd did not come up: ${r.stdout} ${r.stderr}`);
      await sleep(500);
    }
    await startGateway();
    await ceph('radosgw-admin', ['user', 'create', '--uid=test', '--display-name=test', `--access-key=${RGW_ACCESS_KEY}`, `--secret-key=${RGW_SECRET_KEY}`]);
  } catch (err) {
    await stopAll();
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    dir,
    env: { AWS_ACCESS_KEY_ID: RGW_ACCESS_KEY, AWS_SECRET_ACCESS_KEY: RGW_SECRET_KEY, AWS_REGION: 'us-east-1' },
    stopGateway: async () => killPid(pidOf(path.join(run_, 'client.rgw.a.pid'))),
    startGateway,
    stop: async () => {
      await stopAll();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Kills the radosgw with SIGKILL (no graceful close of connections): a crashed endpoint. */
export function killGatewayNow(rgw) {
  const pid = pidOf(path.join(rgw.dir, 'run', 'client.rgw.a.pid'));
  if (pid !== undefined) spawnSync('kill', ['-9', String(pid)]);
}
