/**
 * Regression: a resumed migration copy truncated its target. The file target's flag was inverted,
 * so re-opening an existing target to continue a copy (startOver false) emptied it, and everything
 * copied before the resume was lost (the post-switch comparison caught and repaired 19 units).
 * Fixed in 80169d0 ("Migration: a resumed copy keeps the target's content"); the code now lives in
 * src/repo/targets.ts (openTarget), shared by restore and migration.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { openTarget } from '../../src/repo/targets.js';
import { patternBuffer, tempDir } from '../helpers/images.js';

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

const SIZE = 256 * 1024;

function targetWith(content: Buffer): string {
  const d = tempDir('rebound-regress-target-');
  dirs.push(d);
  const file = path.join(d, 'prod.raw');
  fs.writeFileSync(file, content);
  return file;
}

it('keeps a file target\'s content when a copy resumes into it', async () => {
  const copied = patternBuffer(0, SIZE);
  const file = targetWith(copied);
  const t = await openTarget(file, SIZE, { startOver: false });
  expect(t.fresh).toBe(false);
  const got = Buffer.alloc(SIZE);
  await t.read(got, 0);
  await t.close();
  expect(got.equals(copied)).toBe(true);
  expect(fs.readFileSync(file).equals(copied)).toBe(true);
});

it('keeps the content of a shorter file and extends it to the disk size', async () => {
  const copied = patternBuffer(0, SIZE / 2);
  const file = targetWith(copied);
  const t = await openTarget(file, SIZE, { startOver: false });
  await t.close();
  const now = fs.readFileSync(file);
  expect(now.length).toBe(SIZE);
  expect(now.subarray(0, SIZE / 2).equals(copied)).toBe(true);
  expect(now.subarray(SIZE / 2).every((b) => b === 0)).toBe(true);
});

it('empties the file only when a new copy starts over', async () => {
  const file = targetWith(patternBuffer(0, SIZE));
  const t = await openTarget(file, SIZE, { startOver: true });
  expect(t.fresh).toBe(true);
  await t.close();
  const now = fs.readFileSync(file);
  expect(now.length).toBe(SIZE);
  expect(now.every((b) => b === 0)).toBe(true);
});
