/** JobRegistry.wait: GET /v1/jobs/ID?waitMs=N answers when the job ends or after N ms. */
import { afterEach, expect, it, vi } from 'vitest';
import { JobRegistry } from '../../../src/api/jobs.js';
import { silentLogger } from '../../../src/util/log.js';

afterEach(() => void vi.useRealTimers());

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

it('answers as soon as the job ends, with its final state, however long the wait allowed', async () => {
  vi.useFakeTimers();
  const jobs = new JobRegistry(silentLogger);
  const end = deferred();
  const info = jobs.start('boot-verify', {}, async () => (await end.promise, { ok: true }));
  let answered: unknown = null;
  const waiting = jobs.wait(info.id, 30_000).then((j) => (answered = { ...j }));
  await vi.advanceTimersByTimeAsync(1000);
  expect(answered).toBeNull();
  end.resolve();
  await waiting; // no timer advanced: the end alone answers
  expect(answered).toMatchObject({ state: 'succeeded', result: { ok: true } });
});

it('answers with the running job when the wait is over first, and at once for waitMs 0 or an ended job', async () => {
  vi.useFakeTimers();
  const jobs = new JobRegistry(silentLogger);
  const end = deferred();
  const info = jobs.start('restore', {}, async (_signal, progress) => {
    progress({ doneBytes: 7 });
    await end.promise;
  });
  expect(await jobs.wait(info.id, 0)).toMatchObject({ state: 'running' });
  let answered = false;
  const waiting = jobs.wait(info.id, 250).then((j) => ((answered = true), j));
  await vi.advanceTimersByTimeAsync(249);
  expect(answered).toBe(false);
  await vi.advanceTimersByTimeAsync(1);
  expect(await waiting).toMatchObject({ state: 'running', progress: { doneBytes: 7 } });
  end.resolve();
  await jobs.wait(info.id, 30_000);
  expect(await jobs.wait(info.id, 30_000)).toMatchObject({ state: 'succeeded' });
});

it('refuses an unknown job', async () => {
  await expect(new JobRegistry(silentLogger).wait('nope', 100)).rejects.toMatchObject({ code: 'ERR_JOB_NOT_FOUND' });
});
