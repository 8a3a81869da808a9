/**
 * Positional file I/O for the hot paths (raw images, overlay data files).
 *
 * Why not plain fs.read: a small read served from the page cache costs ~2 us as a synchronous
 * call but ~30 us of CPU through libuv's thread pool (hand-off, wake-up, completion), which made
 * 4 KiB random reads 2-3x slower than nbdkit (tools/bench/nbd-read). So reads of up to
 * SYNC_READ_MAX bytes run synchronously while they stay fast. When one takes longer than
 * SLOW_READ_MS (a page-cache miss: the disk answered), synchronous reads are switched off for
 * BACKOFF_MS process-wide, so a cold device stalls the event loop for at most one disk read per
 * back-off period, and the thread pool serves reads in parallel in between.
 *
 * Small writes get the same treatment with their own switch: a write into the page cache is cheap,
 * but the kernel may throttle a writer (dirty-page limits, allocation), and then the thread pool
 * takes over for a while.
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';

export const SYNC_READ_MAX = 256 * 1024;
/** Small writes only: a write may wait for the kernel's dirty-page throttling. */
const SYNC_WRITE_MAX = 64 * 1024;
/**
 * A synchronous call slower than this did not come from (or go to) the page cache alone: a fixed
 * part, plus the copy at a pessimistic 1 GiB/s (a 1 MiB copy from the page cache takes ~0.1 ms).
 */
const SLOW_FIXED_MS = 0.5;
const slowMs = (bytes: number): number => SLOW_FIXED_MS + bytes / (1024 * 1024);
const BACKOFF_MS = 1000;
let syncReadsAllowedAt = 0;
let syncWritesAllowedAt = 0;

/** Whether the synchronous fast path is currently on (for tests and stats). */
export function syncReadsEnabled(): boolean {
  return performance.now() >= syncReadsAllowedAt;
}

/**
 * Reads `dst.length` bytes at `position`, or fewer only at end of file. Resolves with the number
 * of bytes read; rejects with the system error (callers map it to a BlockError).
 */
export function pread(fd: number, dst: Uint8Array, position: number): Promise<number> {
  if (dst.length <= SYNC_READ_MAX) {
    const start = performance.now();
    if (start >= syncReadsAllowedAt) {
      let done = 0;
      try {
        while (done < dst.length) {
          const n = fs.readSync(fd, dst, done, dst.length - done, position + done);
          if (n === 0) break;
          done += n;
        }
      } catch (err) {
        return Promise.reject(err);
      }
      const end = performance.now();
      if (end - start > slowMs(dst.length)) syncReadsAllowedAt = end + BACKOFF_MS;
      return Promise.resolve(done);
    }
  }
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void =>
      fs.read(fd, dst, done, dst.length - done, position + done, (err, n) => {
        if (err) return reject(err);
        done += n;
        if (n === 0 || done === dst.length) resolve(done);
        else step();
      });
    step();
  });
}

/** Writes all of `src` at `position`; rejects with the system error (e.g. ENOSPC). */
export function pwrite(fd: number, src: Uint8Array, position: number): Promise<void> {
  if (src.length <= SYNC_WRITE_MAX) {
    const start = performance.now();
    if (start >= syncWritesAllowedAt) {
      try {
        for (let done = 0; done < src.length; ) done += fs.writeSync(fd, src, done, src.length - done, position + done);
      } catch (err) {
        return Promise.reject(err);
      }
      const end = performance.now();
      if (end - start > slowMs(src.length)) syncWritesAllowedAt = end + BACKOFF_MS;
      return Promise.resolve();
    }
  }
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void =>
      fs.write(fd, src, done, src.length - done, position + done, (err, n) => {
        if (err) return reject(err);
        done += n;
        if (done < src.length) step();
        else resolve();
      });
    step();
  });
}

export function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}
