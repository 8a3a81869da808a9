/**
 * repo/targets.ts EarlyWriteback: restore and migration start the target's flush after every
 * WRITEBACK_BYTES written, never two at once, and a failed flush is reported by settled() (the
 * copy then fails or pauses instead of claiming data that never reached the disk).
 */
import { expect, it } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { EarlyWriteback, WRITEBACK_BYTES } from '../../../src/repo/targets.js';

/** A device whose flushes wait until released, counted; `fail` makes the next flush fail. */
class HeldFlushes extends MemoryDevice {
  started = 0;
  fail: Error | undefined;
  readonly #release: Array<() => void> = [];
  override flush(): Promise<void> {
    this.started++;
    const err = this.fail;
    this.fail = undefined;
    return new Promise((resolve, reject) => this.#release.push(() => (err ? reject(err) : resolve())));
  }
  release(): void {
    for (const r of this.#release.splice(0)) r();
  }
}

it('starts a flush per WRITEBACK_BYTES written, one at a time', async () => {
  const dev = new HeldFlushes(4096);
  const wb = new EarlyWriteback(dev);
  wb.written(WRITEBACK_BYTES - 1);
  expect(dev.started).toBe(0);
  wb.written(1);
  expect(dev.started).toBe(1);
  wb.written(3 * WRITEBACK_BYTES); // a flush is running: none more
  expect(dev.started).toBe(1);
  dev.release();
  await wb.settled();
  wb.written(WRITEBACK_BYTES);
  expect(dev.started).toBe(2);
  dev.release();
  await wb.settled();
});

it('reports the first failed flush from settled(), every time', async () => {
  const dev = new HeldFlushes(4096);
  const wb = new EarlyWriteback(dev);
  dev.fail = Object.assign(new Error('No space left on device'), { code: 'ENOSPC' });
  wb.written(WRITEBACK_BYTES);
  const settled = wb.settled();
  dev.release();
  await expect(settled).rejects.toMatchObject({ code: 'ENOSPC' });
  wb.written(WRITEBACK_BYTES);
  dev.release();
  await expect(wb.settled()).rejects.toMatchObject({ code: 'ENOSPC' });
});
