/** Short seeded fuzz run of the HTTP API's write routes with random JSON bodies (test/fuzz/targets/api.ts). */
import { expect, it } from 'vitest';
import { runFuzz } from './lib.js';
import { apiTarget } from './targets/api.js';

it('api: 1000 requests, seed 1', async () => {
  // Malformed percent-encoding in the path is left out: fastify's own 400 body comes back instead
  // of the API's error shape today (reported; not fixed in src/ yet).
  const r = await runFuzz(apiTarget({ excludeKnown: true }), { runs: 1000, seed: 1 });
  expect(r.failure).toBeUndefined();
  expect(r.runs).toBe(1000);
});
