/** Short seeded fuzz run of the copy-on-write overlay and its map (test/fuzz/targets/overlay.ts). */
import { expect, it } from 'vitest';
import { runFuzz } from './lib.js';
import { overlayTarget } from './targets/overlay.js';

it('overlay: 300 inputs, seed 1', async () => {
  const r = await runFuzz(overlayTarget(), { runs: 300, seed: 1 });
  expect(r.failure).toBeUndefined();
  expect(r.runs).toBe(300);
}, 60_000);
