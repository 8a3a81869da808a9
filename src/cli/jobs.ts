/**
 * Following a daemon job from the CLI: polls GET /v1/jobs/ID, draws a progress bar on a terminal
 * (cli-progress), and ends with the job's result or a clear failure. Ctrl-C cancels the job.
 */
import cliProgress from 'cli-progress';
import type { ApiClient } from '../api/client.js';
import type { JobInfo } from '../api/jobs.js';
import { ReboundError } from '../errors.js';
import { formatSize } from '../util/size.js';
import type { CliIo } from './io.js';

export interface FollowOptions {
  /** Which progress fields are the total and the part done (bytes). */
  total?: string;
  done?: string;
  pollMs?: number;
}

export async function followJob(client: ApiClient, job: JobInfo, io: CliIo, opts: FollowOptions = {}): Promise<JobInfo> {
  const totalKey = opts.total ?? 'totalBytes';
  const doneKey = opts.done ?? 'doneBytes';
  const bar = io.isTTY
    ? new cliProgress.SingleBar(
        {
          format: `${job.kind} [{bar}] {percentage}% | {doneText} of {totalText} | {rate} | ETA {eta_formatted}`,
          hideCursor: true,
          stream: { write: (s: string) => io.stderr(s) } as unknown as NodeJS.WritableStream,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  let started = false;
  const t0 = Date.now();
  const onStop = (): void => void client.request('DELETE', `/v1/jobs/${job.id}`).catch(() => undefined);
  io.stopSignal.addEventListener('abort', onStop, { once: true });
  try {
    for (;;) {
      // The daemon holds the answer until the job ends or pollMs passes: the end is seen at once,
      // progress every pollMs.
      const pollMs = opts.pollMs ?? 250;
      const asked = Date.now();
      job = await client.get<JobInfo>(`/v1/jobs/${job.id}?waitMs=${pollMs}`);
      const p = job.progress ?? {};
      const total = Number(p[totalKey] ?? 0);
      const done = Number(p[doneKey] ?? 0);
      if (bar && total > 0) {
        const rate = `${formatSize(done / Math.max(0.001, (Date.now() - t0) / 1000))}/s`;
        const payload = { doneText: formatSize(done), totalText: formatSize(total), rate };
        if (!started) {
          bar.start(total, done, payload);
          started = true;
        } else bar.update(done, payload);
      }
      if (job.state !== 'running') break;
      // A daemon that answered at once (one without waitMs) is not asked again in a tight loop.
      const early = pollMs - (Date.now() - asked);
      if (early > 0) await new Promise((r) => setTimeout(r, early));
    }
  } finally {
    io.stopSignal.removeEventListener('abort', onStop);
    if (started) bar?.stop();
  }
  if (job.state !== 'succeeded') {
    const code = job.error?.code;
    throw new ReboundError(
      code === 'ERR_JOB_CANCELLED' || job.state === 'cancelled' ? 'ERR_JOB_CANCELLED' : 'ERR_INTERNAL',
      `${job.kind} ${job.state}: ${job.error?.message ?? 'unknown error'}`,
    );
  }
  return job;
}
