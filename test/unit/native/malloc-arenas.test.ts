/**
 * native/malloc-arenas.c: the daemon limits glibc's malloc arenas at start (tools/fuzz/README.md
 * says why), unless MALLOC_ARENA_MAX in the environment already did; a bad count is a TypeError,
 * never a crash.
 */
import { expect, it } from 'vitest';
import { addonFunctions } from '../../../src/native/addon.js';
import { limitMallocArenas } from '../../../src/native/malloc-arenas.js';

const fns = addonFunctions<{ setMallocArenaMax(n: number): boolean }>('setMallocArenaMax');

it('the native addon is built with setMallocArenaMax', () => {
  expect(fns).toBeDefined();
});

it.runIf(fns)('sets the limit on glibc; MALLOC_ARENA_MAX in the environment wins; a bad count throws', () => {
  expect(limitMallocArenas(8, {})).toBe(true); // Debian's C library is glibc
  expect(limitMallocArenas(2, { MALLOC_ARENA_MAX: '4' })).toBe(false);
  expect(() => fns!.setMallocArenaMax(0)).toThrow(TypeError);
  expect(() => (fns!.setMallocArenaMax as (n: unknown) => boolean)('two')).toThrow(TypeError);
  // Allocation still works across threads afterwards.
  expect(Buffer.alloc(1 << 20, 1).reduce((a, b) => a + b, 0)).toBe(1 << 20);
});
