/**
 * Verifier: the daemon's verification boots. Every boot (a request, a new restore point with
 * verifyAfterBackup, the verifySchedule) is a job of kind `boot-verify` whose result is the
 * stored BootVerification (result.ts).
 *
 * Design notes:
 *  - At most `concurrency` boots run at once (a FIFO of waiters; a waiting job shows phase
 *    `queued` and can be cancelled). `peak` is the most that ever ran together.
 *  - On open, what a killed daemon left (QEMU, run directory, overlays) is cleaned (leftovers.ts)
 *    before anything else starts.
 *  - After-backup: the points known at open are not verified; any newest point of a VM that
 *    appears later is, once. The schedule verifies every VM's newest point.
 */
import { Cron } from 'croner';
import type { JobInfo, JobRegistry } from '../api/jobs.js';
import { errorText } from '../errors.js';
import type { PointManifest } from '../repo/manifest.js';
import { runBootVerification, type BootRunDeps, type BootVerifyRequest } from './boot-run.js';
import { cleanLeftovers } from './leftovers.js';
import { saveResult, type BootVerification, type VerifyTrigger } from './result.js';

export interface VerifierOptions extends BootRunDeps {
  jobs: JobRegistry;
  concurrency: number;
  /** Used by scheduled and after-backup verifications (requests give their own). */
  defaults: BootVerifyRequest;
  afterBackup: boolean;
  /** Cron expression or 'off'. */
  schedule: string;
  /** Called when a verification's result is stored. */
  onResult?: (r: BootVerification) => void;
}

export const BOOT_VERIFY_JOB = 'boot-verify';

export class Verifier {
  readonly #o: VerifierOptions;
  readonly #waiting: Array<() => void> = [];
  readonly #known = new Set<string>();
  #running = 0;
  #peak = 0;
  #cron: Cron | undefined;

  private constructor(o: VerifierOptions) {
    this.#o = o;
  }

  static async open(o: VerifierOptions): Promise<Verifier> {
    const v = new Verifier(o);
    await cleanLeftovers(o.dataDir, o.log);
    for (const { vm } of await o.repo.vms()) for (const p of await o.repo.points(vm)) v.#known.add(`${vm}@${p.id}`);
    if (o.schedule !== 'off') {
      v.#cron = new Cron(o.schedule, { protect: true }, () => void v.verifyLatestOfEach('schedule').catch((err) => o.log.warn('scheduled verification failed', { err: errorText(err) })));
      o.log.info('scheduled verification boots', { schedule: o.schedule, next: v.#cron.nextRun()?.toISOString() });
    }
    return v;
  }

  /** Boots running now, and the most that ever ran at once. */
  get running(): number {
    return this.#running;
  }
  get peak(): number {
    return this.#peak;
  }

  /** Starts a verification job of one point. */
  start(m: PointManifest, given: BootVerifyRequest, trigger: VerifyTrigger = 'request'): JobInfo {
    const req = { timeoutSeconds: this.#o.defaults.timeoutSeconds, ...given };
    const params = { vm: m.vm, point: m.id, trigger, ...stripUndefined({ ...req }) };
    return this.#o.jobs.start(BOOT_VERIFY_JOB, params, async (signal, progress) => {
      progress({ phase: 'queued', vm: m.vm, point: m.id });
      await this.#slot(signal);
      try {
        const { result, png } = await runBootVerification(this.#o, m, req, { signal, trigger, onProgress: progress });
        await saveResult(this.#o.dataDir, result, png);
        this.#o.onResult?.(result);
        return result;
      } finally {
        this.#release();
      }
    });
  }

  /** The repository changed: with afterBackup, verify each VM's newest point not seen before. */
  async pointsChanged(): Promise<void> {
    const fresh: PointManifest[] = [];
    for (const { vm } of await this.#o.repo.vms()) {
      const points = await this.#o.repo.points(vm);
      for (const p of points) {
        if (this.#known.has(`${vm}@${p.id}`)) continue;
        this.#known.add(`${vm}@${p.id}`);
        if (p === points[points.length - 1]) fresh.push(p);
      }
    }
    if (this.#o.afterBackup) for (const m of fresh) this.start(m, this.#o.defaults, 'after-backup');
  }

  async verifyLatestOfEach(trigger: VerifyTrigger): Promise<JobInfo[]> {
    const jobs: JobInfo[] = [];
    for (const { vm } of await this.#o.repo.vms()) jobs.push(this.start(await this.#o.repo.point(vm, 'latest'), this.#o.defaults, trigger));
    return jobs;
  }

  close(): void {
    this.#cron?.stop();
  }

  async #slot(signal: AbortSignal): Promise<void> {
    if (this.#running >= this.#o.concurrency) {
      await new Promise<void>((resolve, reject) => {
        const go = (): void => {
          signal.removeEventListener('abort', abort);
          resolve();
        };
        const abort = (): void => {
          const i = this.#waiting.indexOf(go);
          if (i >= 0) this.#waiting.splice(i, 1);
          reject(signal.reason);
        };
        this.#waiting.push(go);
        signal.addEventListener('abort', abort, { once: true });
      });
    } else this.#running++;
    this.#peak = Math.max(this.#peak, this.#running);
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next(); // the slot passes on: #running stays
    else this.#running--;
  }
}

function stripUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
