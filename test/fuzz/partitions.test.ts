/** Short seeded fuzz run of the partition table parser (test/fuzz/targets/partitions.ts). */
import { expect, it } from 'vitest';
import { runFuzz } from './lib.js';
import { partitionsTarget } from './targets/partitions.js';

it('partitions: 2000 inputs, seed 1', async () => {
  const r = await runFuzz(partitionsTarget(), { runs: 2000, seed: 1 });
  expect(r.failure).toBeUndefined();
  expect(r.runs).toBe(2000);
});
