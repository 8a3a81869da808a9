/**
 * JobRegistry: long operations of the daemon (backup, restore, verify, gc) run as jobs. A job has
 * an id, a kind, its parameters, live progress, and ends succeeded (with a result), failed (with
 * an error code and message) or cancelled. Clients poll GET /v1/jobs/ID (with ?waitMs=N the answer
 * waits up to N ms for the job to end, so a follower learns of the end at once); DELETE cancels through
 * the job's AbortSignal. Finished jobs are kept (the newest KEEP_FINISHED) for later inspection.
 */
import crypto from 'node:crypto';
import { errorText, isReboundError, ReboundError } from '../errors.js';
import type { Logger } from '../util/log.js';

export type JobState = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobInfo {
  id: string;
  kind: string;
  state: JobState;
  params: Record<string, unknown>;
  progress: Record<string, unknown> | null;
  result: unknown;
  error: { code: string; message: string } | null;
  startedAt: string;
  finishedAt: string | null;
}

const KEEP_FINISHED = 100;

export class JobRegistry {
  readonly #jobs = new Map<string, { info: JobInfo; controller: AbortController; done: Promise<void> }>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  start<T>(
    kind: string,
    params: Record<string, unknown>,
    run: (signal: AbortSignal, progress: (p: Record<string, unknown>) => void) => Promise<T>,
    onDone?: (info: JobInfo) => void | Promise<void>,
  ): JobInfo {
    const info: JobInfo = {
      id: crypto.randomBytes(6).toString('hex'),
      kind,
      state: 'running',
      params,
      progress: null,
      result: null,
      error: null,
      startedAt: new Date().toISOString(),
      finishedAt: null,
    };
    const controller = new AbortController();
    this.#log.info('job started', { job: info.id, kind });
    const done = run(controller.signal, (p) => (info.progress = p)).then(
      (result) => ({ state: 'succeeded' as JobState, result, error: null }),
      (err: unknown) => ({
        state: (controller.signal.aborted ? 'cancelled' : 'failed') as JobState,
        result: null,
        error: { code: isReboundError(err) ? err.code : ((err as { code?: string }).code ?? 'ERR_INTERNAL'), message: errorText(err) },
      }),
    ).then(async (end) => {
      // Follow-up work (e.g. publishing a new restore point's exports) runs before clients can
      // see the job as finished, so "succeeded" means the result is usable.
      await onDone?.({ ...info, ...end });
      info.result = end.result;
      info.error = end.error;
      info.state = end.state;
      info.finishedAt = new Date().toISOString();
      this.#log.info('job finished', { job: info.id, kind, state: info.state, ...(info.error ? { error: info.error.message } : {}) });
      this.#prune();
    });
    this.#jobs.set(info.id, { info, controller, done });
    return info;
  }

  get(id: string): JobInfo {
    const j = this.#jobs.get(id);
    if (!j) throw new ReboundError('ERR_JOB_NOT_FOUND', `no job with id '${id}'`);
    return j.info;
  }

  /** The job once it has ended, or as it is after waitMs, whichever comes first. */
  async wait(id: string, waitMs: number): Promise<JobInfo> {
    const j = this.#jobs.get(id);
    if (!j) throw new ReboundError('ERR_JOB_NOT_FOUND', `no job with id '${id}'`);
    if (j.info.state !== 'running' || waitMs <= 0) return j.info;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([j.done, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
    return j.info;
  }

  list(): JobInfo[] {
    return [...this.#jobs.values()].map((j) => j.info);
  }

  cancel(id: string): JobInfo {
    const j = this.#jobs.get(id);
    if (!j) throw new ReboundError('ERR_JOB_NOT_FOUND', `no job with id '${id}'`);
    if (j.info.state === 'running') j.controller.abort(new ReboundError('ERR_JOB_CANCELLED', 'cancelled by request'));
    return j.info;
  }

  /** Cancels running jobs and waits for them (daemon shutdown). */
  async close(): Promise<void> {
    for (const j of this.#jobs.values()) if (j.info.state === 'running') j.controller.abort(new ReboundError('ERR_JOB_CANCELLED', 'the daemon is shutting down'));
    await Promise.all([...this.#jobs.values()].map((j) => j.done));
  }

  #prune(): void {
    const finished = [...this.#jobs.values()].filter((j) => j.info.state !== 'running');
    for (const j of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) this.#jobs.delete(j.info.id);
  }
}
