/**
 * One verification boot of one restore point, start to verdict to clean-up.
 *
 * Design notes:
 *  - The point is pinned and each disk gets a throwaway stack: repo image -> copy-on-write overlay
 *    in the run directory (DATA/verify/runs/ID/overlays/DISK) -> QoS (the verification's own
 *    limits and the sessions' global limiter, so a verification boot never starves recoveries).
 *    The stacks are published in a private catalog that only a private NBD server on the run's
 *    Unix socket renders: nothing is published on the daemon's front ends, the guest's writes land
 *    in the overlay, the point never changes.
 *  - QEMU starts paused; serial console, QMP and the agent are sockets in the run directory, so
 *    the console is watched from the first byte. The verdict waits for every required signal
 *    (serial pattern, each TCP port, agent when asked), then runs the probe script, then takes
 *    the screen. It fails early when QEMU ends (a reset under -no-reboot, a crash) or the console
 *    shows a boot failure, and at the deadline otherwise.
 *  - Whatever happens, the end undoes the start: QEMU quit (killed if it lingers), NBD server and
 *    catalog closed, run directory removed, pin released. run.json (leftovers.ts) covers a daemon
 *    that dies before that.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildStack } from '../blockdev/layer.js';
import { CowOverlay } from '../blockdev/layers/cow/cow-overlay.js';
import { QosLayer, QosLimiter, type QosLimits } from '../blockdev/layers/qos.js';
import { errorText, ReboundError } from '../errors.js';
import { Catalog } from '../exports/catalog.js';
import { NbdServer } from '../nbd/server.js';
import type { PointManifest } from '../repo/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { Logger } from '../util/log.js';
import { DEFAULT_FAIL_PATTERNS, pingAgent, probeTcp, runScript, SerialWatch, type TcpAttempt } from './probes.js';
import { QmpClient } from './qmp.js';
import { qemuArgs, runFiles, type QemuRunFiles } from './qemu-command.js';
import { RESULT_FORMAT, RESULT_VERSION, type BootVerification, type VerifyTrigger } from './result.js';
import { decodePpm, encodePng, judgeScreen, type RgbImage } from './screen.js';
import { bootConfig } from './vm-config.js';
import { runsDir, saveRunRecord, type RunRecord } from './leftovers.js';

/** What to check in a verification boot (the point is given separately). */
export interface BootVerifyRequest {
  timeoutSeconds?: number;
  /** Guest memory, bytes (default: the VM config's, else 1 GiB). */
  memory?: number;
  /** A regular expression the serial console must show. */
  expectSerial?: string;
  /** Guest TCP ports that must answer. */
  tcp?: number[];
  /**
   * With expectSerial: the ports must answer within this many seconds of the pattern's match (the
   * guest said it is up), instead of by the timeout. A port that never opens then fails at the
   * same point of the guest's boot however slow the machine is.
   */
  tcpGraceSeconds?: number;
  /** An operator-side probe script (checked by the caller), run once the other signals are in. */
  script?: string;
  /** Require a qemu-guest-agent answer. */
  agent?: boolean;
  /** Judge the screen (default true). */
  screen?: boolean;
  keepScreenshot?: boolean;
}

export interface BootRunDeps {
  repo: Repository;
  dataDir: string;
  log: Logger;
  /** The sessions' global QoS limiter, and the verification's own limits. */
  sharedQos?: QosLimiter;
  qos?: QosLimits;
  qemu?: string;
  /** auto: kvm when /dev/kvm can be opened, else tcg. */
  accel?: 'auto' | 'kvm' | 'tcg';
  /** Where OVMF's code and variable store templates are (UEFI guests). */
  ovmf?: { code: string; vars: string };
}

export interface BootRunOptions {
  signal?: AbortSignal;
  onProgress?: (p: Record<string, unknown>) => void;
  trigger?: VerifyTrigger;
  /** Called with QEMU's pid when it started and with null when it ended (tests, metrics). */
  onQemu?: (pid: number | null) => void;
}

export const DEFAULT_TIMEOUT_SECONDS = 600;

export async function runBootVerification(deps: BootRunDeps, m: PointManifest, req: BootVerifyRequest, opts: BootRunOptions = {}): Promise<{ result: BootVerification; png: Buffer | null }> {
  const started = new Date();
  const id = `${started.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${crypto.randomBytes(3).toString('hex')}`;
  const dir = path.join(runsDir(deps.dataDir), id);
  const files = runFiles(dir);
  const log = deps.log.child({ run: id, vm: m.vm, point: m.id });
  const timeoutSeconds = req.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  const progress = (phase: string, extra: Record<string, unknown> = {}): void => opts.onProgress?.({ phase, run: id, vm: m.vm, point: m.id, ...extra });
  const cleanup: Array<() => Promise<unknown> | unknown> = []; // undone last-first
  const record: RunRecord = { id, vm: m.vm, point: m.id, startedAt: started.toISOString(), qemuPid: null };
  await fs.promises.mkdir(dir, { recursive: true });
  cleanup.push(() => fs.promises.rm(dir, { recursive: true, force: true }));
  const unpin = deps.repo.pin(m.vm, m.id);
  cleanup.push(unpin);
  let qemu: ChildProcess | undefined;
  let qemuExit: Promise<string> | undefined;
  const q = { pid: null as number | null, startedAt: null as string | null, exitedAt: null as string | null, exit: null as string | null };
  const serial = new SerialWatch(path.join(dir, 'serial.log'), req.expectSerial ? compile(req.expectSerial) : undefined, DEFAULT_FAIL_PATTERNS);
  try {
    await saveRunRecord(dir, record);
    progress('preparing');
    // Through the repository: a point in a bucket has no local directory (and an encrypted one's
    // config files are sealed there).
    const configs = await Promise.all(m.configs.map(async (name) => ({ name, text: await deps.repo.readConfigFile(m, name).then((b) => b.toString('utf8'), () => '') })));
    const boot = bootConfig(configs);
    const memoryMiB = req.memory ? Math.max(16, Math.round(req.memory / 1048576)) : boot.memoryMiB;
    const guessed = boot.guessed.filter((g) => !(g === 'memoryMiB' && req.memory));
    if (boot.firmware === 'uefi') files.ovmf = await ovmfCopy(deps.ovmf, dir);

    // The disks: throwaway overlays over the point, behind a private NBD server.
    const catalog = new Catalog(log);
    const limiter = new QosLimiter(deps.qos ?? {});
    const nbd = new NbdServer({ exports: catalog.view('nbd'), log: log.child({ component: 'nbd' }) });
    cleanup.push(() => catalog.close());
    cleanup.push(() => nbd.close(2000));
    const exports: string[] = [];
    for (const d of m.disks) {
      const name = `verify/${id}/${d.name}`;
      const device = await buildStack(await deps.repo.openImage(m, d.name), [
        (n) => CowOverlay.open(n, { dir: path.join(dir, 'overlays', encodeURIComponent(d.name)), baseId: `repo:${m.vm}@${m.id}/${d.name}` }),
        (n) => new QosLayer(n, limiter, deps.sharedQos),
      ]);
      catalog.publish({ name, kind: 'adhoc', disk: d.name, size: device.size, capabilities: device.capabilities(), publish: ['nbd'], device, source: `repo:${m.vm}@${m.id}/${d.name}` });
      exports.push(name);
    }
    await nbd.listenUnix(files.nbdSocket);
    const forwards = await Promise.all((req.tcp ?? []).map(async (guest) => ({ guest, host: await freePort() })));
    const accel = deps.accel === 'kvm' || deps.accel === 'tcg' ? deps.accel : kvmUsable() ? 'kvm' : 'tcg';
    const machine = { ...boot, guessed, memoryMiB, accel, configFile: boot.source };

    // QEMU, paused until the console is watched.
    const args = qemuArgs({ accel, boot, memoryMiB, exports, forwards, name: `rebound-verify-${id}` }, files);
    const bin = deps.qemu ?? 'qemu-system-x86_64';
    qemu = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr: string[] = [];
    qemu.stderr!.on('data', (d: Buffer) => {
      stderr.push(...d.toString('utf8').split('\n').filter(Boolean));
      stderr.splice(0, Math.max(0, stderr.length - 10));
    });
    qemuExit = new Promise<string>((resolve) => {
      qemu!.once('error', (err) => resolve(`cannot start ${bin}: ${err.message}`));
      qemu!.once('exit', (code, sig) => {
        q.exitedAt = new Date().toISOString();
        opts.onQemu?.(null);
        resolve(`${sig ? `killed by ${sig}` : `exited with code ${code}`}${stderr.length ? `: ${stderr.slice(-3).join(' | ')}` : ''}`);
      });
    });
    void qemuExit.then((e) => (q.exit = e));
    if (qemu.pid) {
      q.pid = qemu.pid;
      q.startedAt = new Date().toISOString();
      opts.onQemu?.(qemu.pid);
      record.qemuPid = qemu.pid;
      await saveRunRecord(dir, record);
    }
    const proc = qemu;
    cleanup.push(() => stopQemu(proc, qemuExit!, qmp));
    let qmp: QmpClient | undefined;
    qmp = await connectWhenReady(() => QmpClient.connect(files.qmp), qemuExit);
    await serial.connect(files.serial);
    await qmp.execute('cont');
    progress('booting', { qemuPid: q.pid, accel });
    log.info('verification boot started', { qemuPid: q.pid, accel, machine: boot.machine, bus: boot.bus, memoryMiB });

    // Wait for the signals until all are in, something fails, or the deadline.
    // A timer of our own: a timeout signal only referenced by AbortSignal.any() can be collected
    // before it fires (Node 20).
    const deadlineCtl = new AbortController();
    const deadlineTimer = setTimeout(() => deadlineCtl.abort(new ReboundError('ERR_VERIFY_FAILED', 'timed out')), timeoutSeconds * 1000);
    cleanup.push(() => clearTimeout(deadlineTimer));
    const deadline = AbortSignal.any([deadlineCtl.signal, ...(opts.signal ? [opts.signal] : [])]);
    const verdictCtl = new AbortController();
    const stop = AbortSignal.any([deadline, verdictCtl.signal]);
    const reasons: string[] = [];
    const tcp = forwards.map((f) => ({ port: f.guest, hostPort: f.host, answered: false, last: 'not tried' as string, atMs: null as number | null }));
    const agent = { required: req.agent === true, answered: false };
    let ended: string | null = null;
    let signalsAt: number | null = null;
    const running = Date.now();
    void qemuExit.then((e) => {
      ended = e;
      verdictCtl.abort();
    });
    const failWatch = serial.until(() => serial.failed !== null, stop).then(() => verdictCtl.abort(), () => undefined);
    const waits: Array<Promise<unknown>> = [];
    if (req.expectSerial) waits.push(serial.until(() => serial.matched !== null, stop));
    // The TCP probes stop at the deadline, or tcpGraceSeconds after the serial pattern matched.
    const graceCtl = new AbortController();
    const tcpStop = AbortSignal.any([stop, graceCtl.signal]);
    let graceTimer: NodeJS.Timeout | undefined;
    if (req.tcpGraceSeconds !== undefined && req.expectSerial && tcp.length) {
      serial.kick.addEventListener('kick', () => (graceTimer = setTimeout(() => graceCtl.abort(), req.tcpGraceSeconds! * 1000)), { once: true });
      cleanup.push(() => clearTimeout(graceTimer));
    }
    tcp.forEach((t, i) =>
      waits.push(
        probeTcp(forwards[i]!.host, tcpStop, (r: TcpAttempt) => (t.last = r), serial.kick).then((r) => {
          t.answered = r === 'answered';
          if (t.answered) t.atMs = Date.now() - running;
          else if (graceCtl.signal.aborted) throw new Error('grace over'); // ends the wait: a port failed
        }),
      ),
    );
    const agentLoop = (async () => {
      while (!stop.aborted && !agent.answered) {
        agent.answered = await pingAgent(files.agent, stop);
        // Ended by the verdict too: a pending pause must not hold the verdict back (it held it 2 s).
        if (!agent.answered) await sleep(2000, undefined, { signal: stop }).catch(() => undefined);
      }
    })();
    if (agent.required) waits.push(agentLoop);
    const allIn = Promise.all(waits).then(
      () => ((signalsAt = Date.now()), true),
      () => false,
    );
    const inTime = await Promise.race([allIn, new Promise<boolean>((r) => stop.addEventListener('abort', () => r(false), { once: true }))]);
    let script: BootVerification['signals']['script'] = null;
    if (inTime && !stop.aborted && req.script) {
      progress('script');
      const env: Record<string, string> = { REBOUND_VM: m.vm, REBOUND_POINT: m.id, REBOUND_HOST: '127.0.0.1' };
      for (const f of forwards) env[`REBOUND_TCP_${f.guest}`] = String(f.host);
      const out = await runScript(req.script, env, stop);
      script = { file: req.script, ...out };
    }
    // Nothing required to wait for: the screen alone judges the guest at the deadline.
    if (waits.length === 0 && !req.script) await new Promise<void>((r) => (stop.aborted ? r() : stop.addEventListener('abort', () => r(), { once: true })));
    progress('judging');
    let screen: BootVerification['signals']['screen'] = null;
    let img: RgbImage | null = null;
    if (!ended) {
      try {
        const ppm = path.join(dir, 'screen.ppm');
        await qmp.execute('screendump', { filename: ppm });
        img = decodePpm(await fs.promises.readFile(ppm));
        screen = { ...judgeScreen(img), required: req.screen !== false };
      } catch (err) {
        log.warn('no screenshot', { err: errorText(err) });
      }
    }
    verdictCtl.abort();
    await Promise.allSettled([failWatch, agentLoop, allIn]);

    // The verdict.
    if (ended) reasons.push(`QEMU ${ended} before the guest was verified`);
    if (serial.failed) reasons.push(`the serial console shows a boot failure: ${serial.failed}`);
    if (req.expectSerial && !serial.matched) reasons.push(`the serial console never matched /${req.expectSerial}/`);
    const within = graceCtl.signal.aborted ? ` within ${req.tcpGraceSeconds} s of the serial pattern` : '';
    for (const t of tcp) if (!t.answered) reasons.push(`TCP port ${t.port} never answered${within} (last attempt: ${t.last})`);
    if (agent.required && !agent.answered) reasons.push('the guest agent never answered guest-ping');
    if (req.script && !script) reasons.push('the probe script did not run: the other signals were not all in before the timeout');
    if (script && script.exitCode !== 0) reasons.push(`the probe script ${script.signal ? `was killed (${script.signal})` : `exited with code ${script.exitCode}`}`);
    if (screen?.required && !screen.ok) reasons.push(screen.reason ?? 'the screen check failed');
    if (!screen && req.screen !== false && !ended) reasons.push('no screenshot could be taken');
    if (opts.signal?.aborted) reasons.unshift('cancelled');
    else if (deadline.aborted && !serial.failed && !ended && waits.length) reasons.push(`timed out after ${timeoutSeconds} s`);
    const ok = reasons.length === 0;
    // Encoded only when kept (--keep-screenshot, or a failure's evidence).
    const png = img && (req.keepScreenshot === true || !ok) ? encodePng(img) : null;
    const keep = png !== null;
    const finished = new Date();
    const result: BootVerification = {
      format: RESULT_FORMAT,
      version: RESULT_VERSION,
      id,
      vm: m.vm,
      point: m.id,
      trigger: opts.trigger ?? 'request',
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      durationMs: finished.getTime() - started.getTime(),
      ok,
      verdict: ok ? 'booted' : 'failed',
      reasons,
      timeoutSeconds,
      signals: { serial: { pattern: req.expectSerial ?? null, matched: serial.matched, atMs: serial.matchedAt && serial.matchedAt - running, failure: serial.failed }, tcp, agent, script, screen },
      timings: { prepareMs: running - started.getTime(), signalsMs: signalsAt && signalsAt - running, finishMs: Date.now() - (signalsAt ?? running) },
      serialTail: serial.tail(),
      screenshot: keep ? `${id}.png` : null,
      machine,
      qemu: q,
    };
    log.info('verification boot finished', { verdict: result.verdict, reasons, durationMs: result.durationMs });
    return { result, png: keep ? png : null };
  } finally {
    await serial.close();
    // Undone in reverse: QEMU, the NBD server, the disks, the pin, the run directory.
    for (const step of cleanup.reverse()) {
      try {
        await step();
      } catch (err) {
        log.warn('verification clean-up step failed', { err: errorText(err) });
      }
    }
    if (q.pid && !q.exitedAt) q.exitedAt = new Date().toISOString();
  }
}

function compile(re: string): RegExp {
  try {
    return new RegExp(re);
  } catch (err) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `--expect-serial: not a regular expression: ${(err as Error).message}`);
  }
}

function kvmUsable(): boolean {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** A free TCP port on 127.0.0.1 for a forward (QEMU binds it right after). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** QEMU creates its sockets as it starts: retry the connection a bounded number of times. */
async function connectWhenReady<T>(connect: () => Promise<T>, exited: Promise<string>): Promise<T> {
  let gone: string | undefined;
  void exited.then((e) => (gone = e));
  let last: unknown;
  for (let i = 0; i < 400; i++) {
    if (gone) throw new ReboundError('ERR_VERIFY_UNAVAILABLE', `QEMU ${gone}`);
    try {
      return await connect();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new ReboundError('ERR_VERIFY_UNAVAILABLE', `cannot reach QEMU's monitor: ${errorText(last)}`);
}

async function stopQemu(proc: ChildProcess, exited: Promise<string>, qmp: QmpClient | undefined): Promise<void> {
  if (proc.exitCode === null && proc.signalCode === null) {
    await qmp?.execute('quit').catch(() => undefined);
    const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
  qmp?.close();
}

const OVMF = { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.fd' };

async function ovmfCopy(ovmf: { code: string; vars: string } | undefined, dir: string): Promise<QemuRunFiles['ovmf']> {
  const src = ovmf ?? OVMF;
  if (!fs.existsSync(src.code) || !fs.existsSync(src.vars)) {
    throw new ReboundError('ERR_VERIFY_UNAVAILABLE', `the VM's configuration asks for UEFI, but ${src.code} is missing: apt-get install ovmf`);
  }
  const vars = path.join(dir, 'OVMF_VARS.fd');
  await fs.promises.copyFile(src.vars, vars);
  return { code: src.code, vars };
}
