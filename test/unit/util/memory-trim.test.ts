/**
 * util/memory-trim.ts: the periodic malloc_trim is scheduled only with the addon and a non-zero
 * interval, and the addon's call gives freed Buffer memory back to the kernel: after half of many
 * odd-sized Buffers are collected the RSS stays where it was, and falls once malloc_trim ran.
 */
import { runInNewContext } from 'node:vm';
import v8 from 'node:v8';
import { expect, it } from 'vitest';
import { addonFunctions } from '../../../src/native/addon.js';
import { MemoryTrim } from '../../../src/util/memory-trim.js';

const fns = addonFunctions<{ mallocTrim(): boolean }>('mallocTrim');
const MiB = 1024 * 1024;

it('schedules trims with the addon and an interval, none with interval 0', () => {
  const off = new MemoryTrim(0);
  expect(off.active).toBe(false);
  off.stop();
  const on = new MemoryTrim(10_000);
  expect(on.active).toBe(fns !== undefined);
  on.stop();
});

it.skipIf(!fns)('malloc_trim gives back the memory of collected Buffers that malloc kept', async () => {
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  // 4,000 Buffers of 16-80 KiB (below glibc's mmap threshold: they live in malloc's heap), about 190 MiB.
  let keep: Buffer[] = [];
  for (let i = 0; i < 4000; i++) keep.push(Buffer.alloc(16384 + ((i * 7919) % 65536), 1));
  keep = keep.filter((_, i) => i % 2 === 0); // every other one freed: holes malloc keeps
  gc();
  await new Promise((r) => setImmediate(r));
  gc();
  const before = process.memoryUsage().rss;
  expect(fns!.mallocTrim()).toBe(true);
  const after = process.memoryUsage().rss;
  expect(before - after).toBeGreaterThan(40 * MiB); // measured: about 70 MiB
  expect(keep.length).toBe(2000);
});
