/** Short seeded fuzz run of ONC RPC + MOUNT + NFSv3 argument decoding (test/fuzz/targets/nfs.ts). */
import { expect, it } from 'vitest';
import { runFuzz } from './lib.js';
import { nfsTarget } from './targets/nfs.js';

it('nfs: 500 connections, seed 1, server MOUNTs and READs every 50', async () => {
  const r = await runFuzz(nfsTarget(), { runs: 500, seed: 1 });
  expect(r.failure).toBeUndefined();
  expect(r.runs).toBe(500);
  expect(r.livenessChecks).toBe(12);
});
