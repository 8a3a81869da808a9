/** Short seeded fuzz run of the iSCSI target's PDU, text and CDB decoding (test/fuzz/targets/iscsi.ts). */
import { expect, it } from 'vitest';
import { runFuzz } from './lib.js';
import { iscsiTarget } from './targets/iscsi.js';

it('iscsi: 500 connections, seed 1, a fresh initiator READs every 50', async () => {
  const r = await runFuzz(iscsiTarget(), { runs: 500, seed: 1 });
  expect(r.failure).toBeUndefined();
  expect(r.runs).toBe(500);
  expect(r.livenessChecks).toBe(12);
}, 300_000);
