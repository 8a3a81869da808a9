/** Short seeded fuzz run of the NBD server's handshake and transmission decoding (test/fuzz/targets/nbd.ts). */
import { expect, it } from 'vitest';
import { runFuzz } from './lib.js';
import { nbdTarget } from './targets/nbd.js';

it('nbd: 500 connections, seed 1, server answers a READ every 50', async () => {
  const r = await runFuzz(nbdTarget(), { runs: 500, seed: 1 });
  expect(r.failure).toBeUndefined();
  expect(r.runs).toBe(500);
  expect(r.livenessChecks).toBe(12);
});
