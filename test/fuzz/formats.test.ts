/** Short seeded fuzz run of the on-disk format decoders (test/fuzz/targets/formats.ts). */
import { expect, it } from 'vitest';
import { runFuzz } from './lib.js';
import { formatsTarget } from './targets/formats.js';

it('formats: 2000 inputs, seed 1', async () => {
  const r = await runFuzz(formatsTarget(), { runs: 2000, seed: 1 });
  expect(r.failure).toBeUndefined();
  expect(r.runs).toBe(2000);
});
