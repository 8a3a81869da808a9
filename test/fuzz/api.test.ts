/** Short seeded fuzz run of the HTTP API's write routes with random JSON bodies (test/fuzz/targets/api.ts). */
import { expect, it } from 'vitest';
import { runFuzz } from './lib.js';
import { apiTarget } from './targets/api.js';

it('api: 1000 requests, seed 1', async () => {
  const r = await runFuzz(apiTarget(), { runs: 1000, seed: 1 });
  expect(r.failure).toBeUndefined();
  expect(r.runs).toBe(1000);
});
