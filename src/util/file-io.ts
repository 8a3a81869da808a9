/**
 * Positional file I/O for the hot paths (raw images, overlay data files).
 *
 * Why not plain fs.read: a small read served from the page cache costs ~2 us as a synchronous
 * call but ~30 us of CPU through libuv's thread pool (hand-off, wake-up, completion), which made
 * 4 KiB random reads 2-3x slower than nbdkit (tools/bench/nbd-read). So reads of up to
 * SYNC_READ_MAX bytes run synchronously while they stay fast. A call slower than slowMs() did not
 * come from the page cache alone (the disk answered, or the kernel made us wait); such calls draw
 * on a stall budget of STALL_BUDGET_MS per BACKOFF_MS window, and when it is spent the synchronous
 * path is switched off for BACKOFF_MS process-wide: a cold device stalls the event loop for at most
 * the budget plus one call per back-off period, and the thread pool serves the calls in parallel
 * in between. (With a budget of one call, a single hiccup — an ext4 write waiting 1-5 ms for the
 * journal, or the scheduler taking the CPU away mid-call on a loaded machine — sent every small
 * call of the next second through the thread pool: in tools/bench/iscsi most 4 KiB overlay writes
 * went through the pool, a few slow calls a second being enough.)
 *
 * Small writes get the same treatment with their own switch: a write into the page cache is cheap,
 * but the kernel may throttle a writer (dirty-page limits, allocation), and then the thread pool
 * takes over for a while.
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { addonFunctions } from '../native/addon.js';

/** preadv2(RWF_NOWAIT) from the native addon: bytes read, 0 at end of file, -1 when not cached. */
let readCached = addonFunctions<{ readCached(fd: number, dst: Uint8Array, position: number): number }>('readCached')?.readCached;

export const SYNC_READ_MAX = 256 * 1024;
/** Small writes only: a write may wait for the kernel's dirty-page throttling. */
const SYNC_WRITE_MAX = 64 * 1024;
/**
 * A synchronous call slower than this did not come from (or go to) the page cache alone: a fixed
 * part, plus the copy at a pessimistic 1 GiB/s (a 1 MiB copy from the page cache takes ~0.1 ms).
 */
const SLOW_FIXED_MS = 0.5;
const slowMs = (bytes: number): number => SLOW_FIXED_MS + bytes / (1024 * 1024);
export const BACKOFF_MS = 1000;
/**
 * How long slow synchronous calls may stall the event loop per BACKOFF_MS before the switch goes
 * off: 5% of the loop's time. A 4 KiB call through the thread pool costs ~20 us more CPU than a
 * synchronous one, so at 20,000 calls a second a second in the pool costs ~400 ms, far more than
 * the stalls it avoids: on the 2-core development VM at load 6, 4 KiB overlay writes (tools/bench/iscsi)
 * were slow 10-25 times a second, 0.5-4 ms each (journal waits, preemption), 10-25 ms a second.
 */
export const STALL_BUDGET_MS = 50;

/** Whether synchronous calls of one kind (reads or writes) are on, from the stalls they caused. Exported for tests. */
export class SyncSwitch {
  #allowedAt = 0;
  #windowStart = 0;
  #stalledMs = 0;

  allowed(now: number): boolean {
    return now >= this.#allowedAt;
  }

  /** Records a synchronous call of `bytes` that ran from `start` to `end` (performance.now()). */
  record(start: number, end: number, bytes: number): void {
    const took = end - start;
    if (took <= slowMs(bytes)) return;
    if (end - this.#windowStart > BACKOFF_MS) {
      this.#windowStart = end;
      this.#stalledMs = 0;
    }
    this.#stalledMs += took;
    if (this.#stalledMs > STALL_BUDGET_MS) {
      this.#allowedAt = end + BACKOFF_MS;
      this.#windowStart = this.#allowedAt;
      this.#stalledMs = 0;
    }
  }
}

const syncReads = new SyncSwitch();
const syncWrites = new SyncSwitch();

/** Whether the synchronous fast path is currently on (for tests and stats). */
export function syncReadsEnabled(): boolean {
  return syncReads.allowed(performance.now());
}

/**
 * Fills `dst` from `position` at once if the page cache holds all of it (preadv2 RWF_NOWAIT through
 * the addon); false otherwise (not cached, end of file, an error, no addon), having changed
 * nothing the caller relies on: it reads the ordinary way then, which reports any error.
 */
export function readCachedNow(fd: number, dst: Uint8Array, position: number): boolean {
  if (!readCached) return false;
  try {
    return readCached(fd, dst, position) === dst.length;
  } catch {
    return false;
  }
}

/**
 * Runs `call`, which reads `bytes` from a file (sendfile from the page cache, say), synchronously
 * when the read switch is on and `bytes` is at most SYNC_READ_MAX, timed against the same stall
 * budget as pread; returns undefined, without calling it, otherwise (the caller uses the pool).
 */
export function syncFileRead<T>(bytes: number, call: () => T): T | undefined {
  if (bytes > SYNC_READ_MAX) return undefined;
  const start = performance.now();
  if (!syncReads.allowed(start)) return undefined;
  const result = call();
  syncReads.record(start, performance.now(), bytes);
  return result;
}

/**
 * Reads `dst.length` bytes at `position`, or fewer only at end of file. Resolves with the number
 * of bytes read; rejects with the system error (callers map it to a BlockError).
 *
 * With the native addon, a small read takes from the page cache what it holds without ever
 * waiting for the disk (preadv2 RWF_NOWAIT, native/read-cached.c) and sends only what missed to the
 * thread pool: a cold disk then never stalls the event loop, and the reads that hit the cache stay
 * cheap. Without it, the synchronous read is timed against the stall budget (SyncSwitch); sendfile
 * and sealing from a file draw on that budget too (syncFileRead), since neither can refuse to wait.
 */
export function pread(fd: number, dst: Uint8Array, position: number): Promise<number> {
  if (dst.length <= SYNC_READ_MAX) {
    if (readCached) {
      // Never waits for the disk, so it needs no stall budget.
      let n: number;
      try {
        n = readCached(fd, dst, position);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EOPNOTSUPP') return Promise.reject(err);
        readCached = undefined; // a file system without non-blocking reads: the timed path from now on
        return pread(fd, dst, position);
      }
      if (n === dst.length || n === 0) return Promise.resolve(n);
      return poolRead(fd, dst, position, Math.max(n, 0)); // not cached (-1), or only its start: the pool reads the rest
    }
    const start = performance.now();
    if (syncReads.allowed(start)) {
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
      syncReads.record(start, performance.now(), dst.length);
      return Promise.resolve(done);
    }
  }
  return poolRead(fd, dst, position, 0);
}

/** Reads the rest of `dst` from byte `done` on libuv's thread pool; resolves with the total read. */
function poolRead(fd: number, dst: Uint8Array, position: number, done: number): Promise<number> {
  return new Promise((resolve, reject) => {
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
    if (syncWrites.allowed(start)) {
      try {
        for (let done = 0; done < src.length; ) done += fs.writeSync(fd, src, done, src.length - done, position + done);
      } catch (err) {
        return Promise.reject(err);
      }
      syncWrites.record(start, performance.now(), src.length);
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
