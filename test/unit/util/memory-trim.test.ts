/**
 * util/memory-trim.ts: the periodic malloc_trim is scheduled only with the addon and a non-zero
 * interval, never keeps the process alive, and the addon's call answers.
 */
import { expect, it } from 'vitest';
import { addonFunctions } from '../../../src/native/addon.js';
import { MemoryTrim } from '../../../src/util/memory-trim.js';

const fns = addonFunctions<{ mallocTrim(): boolean }>('mallocTrim');

it('schedules trims with the addon and an interval, none with interval 0', () => {
  const off = new MemoryTrim(0);
  expect(off.active).toBe(false);
  off.stop();
  const on = new MemoryTrim(10_000);
  expect(on.active).toBe(fns !== undefined);
  on.stop();
});

it.skipIf(!fns)('malloc_trim runs and says whether it released memory', () => {
  // How much it releases depends on the process's heap; the fuzz runs measure that (tools/fuzz/README.md).
  expect(typeof fns!.mallocTrim()).toBe('boolean');
});
