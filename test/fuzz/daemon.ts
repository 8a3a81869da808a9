/**
 * Daemon mode of the server fuzz targets (`tools/fuzz/run.mjs nbd --daemon`, or
 * REBOUND_FUZZ_DAEMON=1): the fuzzed connections go to a real `rebound serve` process (dist/ must
 * be built) instead of an in-process server, so its memory can be read from /proc without the
 * fuzzer's own heap in it. The liveness probe (a well-behaved client) keeps running every 50
 * inputs; the target reports the daemon's RSS at start, after a warm-up of WARMUP inputs, at the
 * end, and its peak (VmHWM). After the warm-up and at the end it also pauses the inputs and reads
 * a settled RSS: what the daemon still holds, not garbage V8 has not collected yet nor free memory
 * malloc keeps.
 *
 * Settling: the daemon runs with its inspector on loopback (`--inspect=127.0.0.1:0`, daemon mode
 * only); the pause asks it for full garbage collections (HeapProfiler.collectGarbage) and then
 * waits for its periodic malloc_trim (every TRIM_MS here, util/memory-trim.ts). Under load the old
 * space and the Buffers' malloc memory hold 15-45 MiB of garbage until the next major GC, and
 * without the forced collection a reading said when V8 last collected (100,000-input runs: -14.5
 * and +14.2 MiB). The inspector is reached with the WebSocket client that Node 20 has behind
 * --experimental-websocket (tools/fuzz/run.mjs passes it in daemon mode); without it the pause
 * falls back to waiting IDLE_SETTLE_MS for V8's memory reducer.
 */
import fs from 'node:fs';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';

export const daemonMode = process.env.REBOUND_FUZZ_DAEMON === '1';
/** Inputs before the "before" RSS is taken: the daemon's code is compiled and its pools filled by then. */
export const WARMUP = 10_000;

const MiB = 1024 * 1024;
/** The daemon's --memory-trim-interval in daemon mode (the default is 10 s; shorter keeps the pauses short). */
const TRIM_MS = 1000;
/** Before the forced collections: connections of the last inputs close, their requests end. */
const QUIET_MS = 2000;
/** After them: the Buffers' memory is freed (ArrayBufferSweeper) and a trim has run. */
const TRIM_WAIT_MS = 3 * TRIM_MS;
/** Without the inspector: long enough for V8's memory reducer (a full GC after ~8 s of low allocation) and a trim. */
const IDLE_SETTLE_MS = 20_000;

export class FuzzDaemon {
  readonly proc: DaemonProcess;
  readonly pid: number;
  readonly rssAtStart: number;
  rssAfterWarmup: number | undefined;
  rssAfterWarmupSettled: number | undefined;
  /** How the settled readings were taken (the report says so); both pauses settle the same way unless the inspector failed. */
  #settledBy = new Set<string>();
  readonly #baselineSockets: number;

  private constructor(proc: DaemonProcess) {
    this.proc = proc;
    this.pid = proc.child.pid!;
    this.rssAtStart = this.status('VmRSS');
    this.#baselineSockets = this.sockets();
  }

  static async start(args: string[]): Promise<FuzzDaemon> {
    const env = { NODE_OPTIONS: [process.env.NODE_OPTIONS, '--inspect=127.0.0.1:0'].filter(Boolean).join(' ') };
    return new FuzzDaemon(await startDaemonProcess([...args, '--http', 'off', '--log-level', 'error', '--memory-trim-interval', String(TRIM_MS)], { env }));
  }

  /** The daemon's inspector (its stderr names it), when this process has a WebSocket client. */
  #inspector(): string | undefined {
    if (typeof WebSocket !== 'function') return undefined;
    return /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/[\w-]+)/.exec(this.proc.stderr())?.[1];
  }

  /** Runs full garbage collections in the daemon through its inspector; false when it cannot. */
  async #collectGarbage(): Promise<boolean> {
    const url = this.#inspector();
    if (!url) return false;
    const ws = new WebSocket(url);
    try {
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error(`cannot reach the daemon's inspector at ${url}`));
      });
      // Twice: what the first one finalizes (weak callbacks, Buffers' backing stores) goes in the second.
      for (let id = 1; id <= 2; id++) {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('HeapProfiler.collectGarbage did not answer')), 30_000);
          ws.onmessage = (ev) => {
            if ((JSON.parse(String(ev.data)) as { id?: number }).id !== id) return;
            clearTimeout(timer);
            resolve();
          };
          ws.send(JSON.stringify({ id, method: 'HeapProfiler.collectGarbage' }));
        });
      }
      return true;
    } finally {
      ws.close();
    }
  }

  status(key: 'VmRSS' | 'VmHWM'): number {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    if (!m) throw new Error(`no ${key} in /proc/${this.pid}/status`);
    return Number(m[1]) * 1024;
  }

  /** Sockets the daemon has open (listeners and connections). */
  sockets(): number {
    let n = 0;
    for (const fd of fs.readdirSync(`/proc/${this.pid}/fd`)) {
      try {
        if (fs.readlinkSync(`/proc/${this.pid}/fd/${fd}`).startsWith('socket:')) n++;
      } catch {
        // closed meanwhile
      }
    }
    return n;
  }

  /** Connections still open beyond the listeners, after waiting up to 3 s for them to close. */
  async leftoverConnections(): Promise<number> {
    for (let i = 0; i < 300 && this.sockets() > this.#baselineSockets; i++) await new Promise((r) => setTimeout(r, 10));
    return Math.max(0, this.sockets() - this.#baselineSockets);
  }

  /** Called from the liveness check with the number of inputs done; pauses once, after the warm-up. */
  async sample(done: number): Promise<void> {
    if (this.rssAfterWarmup !== undefined || done < WARMUP) return;
    this.rssAfterWarmup = this.status('VmRSS');
    this.rssAfterWarmupSettled = await this.#settled();
  }

  /** The RSS after a pause without inputs, full garbage collections and a trim (see the top of this file). */
  async #settled(): Promise<number> {
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    await sleep(QUIET_MS);
    const forced = await this.#collectGarbage();
    this.#settledBy.add(forced ? 'forced full GC (inspector) + malloc_trim' : `${IDLE_SETTLE_MS / 1000} s idle + malloc_trim`);
    await sleep(forced ? TRIM_WAIT_MS : IDLE_SETTLE_MS - QUIET_MS);
    return this.status('VmRSS');
  }

  async report(): Promise<Record<string, unknown>> {
    const after = this.status('VmRSS');
    const afterSettled = await this.#settled();
    const mib = (n: number): number => Math.round((n / MiB) * 10) / 10;
    const settledGrowth = this.rssAfterWarmupSettled === undefined ? null : mib(afterSettled - this.rssAfterWarmupSettled);
    return {
      daemonPid: this.pid,
      daemonRssAtStartMiB: mib(this.rssAtStart),
      daemonRssAfterWarmupMiB: this.rssAfterWarmup === undefined ? null : mib(this.rssAfterWarmup),
      daemonRssAfterMiB: mib(after),
      daemonRssGrowthAfterWarmupMiB: this.rssAfterWarmup === undefined ? null : mib(after - this.rssAfterWarmup),
      daemonRssSettledAfterWarmupMiB: this.rssAfterWarmupSettled === undefined ? null : mib(this.rssAfterWarmupSettled),
      daemonRssSettledAfterMiB: mib(afterSettled),
      daemonRssSettledGrowthMiB: settledGrowth,
      daemonPeakMiB: mib(this.status('VmHWM')),
      daemonSettledBy: [...this.#settledBy].join('; '),
      daemonExitedDuringRun: this.proc.child.exitCode !== null,
    };
  }

  async stop(): Promise<void> {
    await this.proc.stop('SIGTERM');
  }
}
