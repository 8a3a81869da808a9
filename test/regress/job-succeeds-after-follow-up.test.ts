/**
 * Regression: a job was 'succeeded' before its follow-up ran. JobRegistry set the state first and
 * then awaited `onDone` (for a backup: publishing the new restore point's exports), so a client
 * polling GET /v1/jobs/ID could see 'succeeded' and then find VM@POINT/DISK missing (3 of 30 runs
 * of the repository benchmark). Fixed in c96a097 ("Review fixes: a job is 'succeeded' only after
 * its follow-up (new point's exports) ran").
 */
import { expect, it } from 'vitest';
import { JobRegistry, type JobInfo } from '../../src/api/jobs.js';
import { silentLogger } from '../../src/util/log.js';

/** Lets every pending promise callback and I/O callback run (a bounded number of turns). */
async function settle(turns = 10): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

it('reports a job running until its follow-up has finished, then succeeded with the result', async () => {
  const jobs = new JobRegistry(silentLogger);
  const followUp = deferred();
  const seenByFollowUp: JobInfo[] = [];
  const info = jobs.start('backup', { vm: 'vm1' }, async () => ({ point: 'P1' }), async (end) => {
    seenByFollowUp.push(end);
    await followUp.promise;
  });
  await settle();
  // The run finished and the follow-up started, but clients must not see success yet.
  expect(seenByFollowUp).toHaveLength(1);
  expect(seenByFollowUp[0]).toMatchObject({ state: 'succeeded', result: { point: 'P1' } });
  expect(jobs.get(info.id)).toMatchObject({ state: 'running', finishedAt: null });
  expect(jobs.list().map((j) => j.state)).toEqual(['running']);
  followUp.resolve();
  await settle();
  expect(jobs.get(info.id)).toMatchObject({ state: 'succeeded', result: { point: 'P1' }, error: null });
  expect(jobs.get(info.id).finishedAt).not.toBeNull();
});

it('reports a failed job failed only after its follow-up has finished', async () => {
  const jobs = new JobRegistry(silentLogger);
  const followUp = deferred();
  const info = jobs.start('restore', {}, async () => Promise.reject(new Error('target full')), () => followUp.promise);
  await settle();
  expect(jobs.get(info.id).state).toBe('running');
  followUp.resolve();
  await settle();
  expect(jobs.get(info.id)).toMatchObject({ state: 'failed', error: { message: expect.stringContaining('target full') } });
});
