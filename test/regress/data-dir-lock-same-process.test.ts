/**
 * Regression: a lock file naming our own pid was taken for stale, so a second daemon started in the
 * same process (library use, tests) silently took over a data directory that was in use.
 */
import { expect, it } from 'vitest';
import { DataDirLock } from '../../src/daemon/data-dir.js';
import { tempDir } from '../helpers/images.js';

it('refuses a second lock on the same directory within one process', () => {
  const dir = tempDir();
  const first = DataDirLock.acquire(dir);
  expect(() => DataDirLock.acquire(dir)).toThrow(/in use by another rebound daemon/);
  first.release();
  DataDirLock.acquire(dir).release();
});
