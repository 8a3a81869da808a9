/**
 * Daemon mode of the server fuzz targets (`tools/fuzz/run.mjs nbd --daemon`, or
 * REBOUND_FUZZ_DAEMON=1): the fuzzed connections go to a real `rebound serve` process (dist/ must
 * be built) instead of an in-process server, so its memory can be read from /proc without the
 * fuzzer's own heap in it. The liveness probe (a well-behaved client) keeps running every 50
 * inputs; the target reports the daemon's RSS at start, after a warm-up of WARMUP inputs, at the
 * end, and its peak (VmHWM).
 */
import fs from 'node:fs';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';

export const daemonMode = process.env.REBOUND_FUZZ_DAEMON === '1';
/** Inputs before the "before" RSS is taken: the daemon's code is compiled and its pools filled by then. */
export const WARMUP = 10_000;

const MiB = 1024 * 1024;

export class FuzzDaemon {
  readonly proc: DaemonProcess;
  readonly pid: number;
  readonly rssAtStart: number;
  rssAfterWarmup: number | undefined;
  readonly #baselineSockets: number;

  private constructor(proc: DaemonProcess) {
    this.proc = proc;
    this.pid = proc.child.pid!;
    this.rssAtStart = this.status('VmRSS');
    this.#baselineSockets = this.sockets();
  }

  static async start(args: string[]): Promise<FuzzDaemon> {
    return new FuzzDaemon(await startDaemonProcess([...args, '--http', 'off', '--log-level', 'error']));
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

  /** Called from the liveness check with the number of inputs done. */
  sample(done: number): void {
    if (this.rssAfterWarmup === undefined && done >= WARMUP) this.rssAfterWarmup = this.status('VmRSS');
  }

  report(): Record<string, unknown> {
    const after = this.status('VmRSS');
    const mib = (n: number): number => Math.round((n / MiB) * 10) / 10;
    return {
      daemonPid: this.pid,
      daemonRssAtStartMiB: mib(this.rssAtStart),
      daemonRssAfterWarmupMiB: this.rssAfterWarmup === undefined ? null : mib(this.rssAfterWarmup),
      daemonRssAfterMiB: mib(after),
      daemonRssGrowthAfterWarmupMiB: this.rssAfterWarmup === undefined ? null : mib(after - this.rssAfterWarmup),
      daemonPeakMiB: mib(this.status('VmHWM')),
      daemonExitedDuringRun: this.proc.child.exitCode !== null,
    };
  }

  async stop(): Promise<void> {
    await this.proc.stop('SIGTERM');
  }
}
