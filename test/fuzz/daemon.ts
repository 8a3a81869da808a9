/**
 * Daemon mode of the server fuzz targets (`tools/fuzz/run.mjs nbd --daemon`, or
 * REBOUND_FUZZ_DAEMON=1): the fuzzed connections go to a real `rebound serve` process (dist/ must
 * be built) instead of an in-process server, so its memory can be read from /proc without the
 * fuzzer's own heap in it. The liveness probe (a well-behaved client) keeps running every 50
 * inputs; the target reports the daemon's RSS at start, after a warm-up of WARMUP inputs, at the
 * end, and its peak (VmHWM). After the warm-up and at the end it also pauses the inputs for
 * SETTLE_MS, so the daemon's periodic malloc_trim (every TRIM_MS here, util/memory-trim.ts) has run
 * while idle, and reads the RSS again: the settled figures compare like with like (memory the
 * daemon still holds, not free memory malloc keeps).
 */
import fs from 'node:fs';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';

export const daemonMode = process.env.REBOUND_FUZZ_DAEMON === '1';
/** Inputs before the "before" RSS is taken: the daemon's code is compiled and its pools filled by then. */
export const WARMUP = 10_000;

const MiB = 1024 * 1024;
/** The daemon's --memory-trim-interval in daemon mode (the default is 10 s; shorter keeps the pauses short). */
const TRIM_MS = 1000;
/**
 * The pause: long enough for V8's memory reducer (a full GC once the allocation rate has been low
 * for about 8 s) and a trim after it. Under load the old space and the Buffers' malloc memory hold
 * garbage until the next major GC, 15-45 MiB here depending on when the last one ran, so an RSS
 * read under load says when V8 last collected, not what the daemon keeps.
 */
const SETTLE_MS = 20_000;

export class FuzzDaemon {
  readonly proc: DaemonProcess;
  readonly pid: number;
  readonly rssAtStart: number;
  rssAfterWarmup: number | undefined;
  rssAfterWarmupSettled: number | undefined;
  readonly #baselineSockets: number;

  private constructor(proc: DaemonProcess) {
    this.proc = proc;
    this.pid = proc.child.pid!;
    this.rssAtStart = this.status('VmRSS');
    this.#baselineSockets = this.sockets();
  }

  static async start(args: string[]): Promise<FuzzDaemon> {
    return new FuzzDaemon(await startDaemonProcess([...args, '--http', 'off', '--log-level', 'error', '--memory-trim-interval', String(TRIM_MS)]));
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

  /** The RSS after SETTLE_MS without inputs. */
  async #settled(): Promise<number> {
    await new Promise((r) => setTimeout(r, SETTLE_MS));
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
      daemonExitedDuringRun: this.proc.child.exitCode !== null,
    };
  }

  async stop(): Promise<void> {
    await this.proc.stop('SIGTERM');
  }
}
