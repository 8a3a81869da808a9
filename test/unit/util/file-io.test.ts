import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addonFunctions } from '../../../src/native/addon.js';
import { BACKOFF_MS, pread, readCachedNow, STALL_BUDGET_MS, SyncSwitch } from '../../../src/util/file-io.js';

const KiB4 = 4096;

describe('SyncSwitch (when small file I/O stops running synchronously)', () => {
  it('stays on for calls served from the page cache', () => {
    const sw = new SyncSwitch();
    for (let i = 0; i < 10_000; i++) sw.record(i, i + 0.05, KiB4);
    expect(sw.allowed(10_000)).toBe(true);
  });

  it('stays on when a few slow calls fit in the stall budget of a window', () => {
    const sw = new SyncSwitch();
    const slow = STALL_BUDGET_MS / 4;
    for (let i = 0; i < 3; i++) sw.record(100 + i * 10, 100 + i * 10 + slow, KiB4);
    expect(sw.allowed(200)).toBe(true);
  });

  it('switches off for one back-off period once slow calls exceed the budget, then on again', () => {
    const sw = new SyncSwitch();
    const slow = STALL_BUDGET_MS / 4;
    let t = 100;
    for (let i = 0; i < 5; i++) {
      sw.record(t, t + slow, KiB4);
      t += slow + 1;
    }
    expect(sw.allowed(t)).toBe(false);
    expect(sw.allowed(t + BACKOFF_MS - 10)).toBe(false);
    expect(sw.allowed(t + BACKOFF_MS + 1)).toBe(true);
  });

  it('switches off at once for one call slower than the budget (a cold device)', () => {
    const sw = new SyncSwitch();
    sw.record(50, 50 + STALL_BUDGET_MS * 2, KiB4);
    expect(sw.allowed(50 + STALL_BUDGET_MS * 2 + 1)).toBe(false);
  });

  it('does not add up slow calls of different windows', () => {
    const sw = new SyncSwitch();
    const slow = STALL_BUDGET_MS / 2;
    let t = 0;
    for (let i = 0; i < 20; i++) {
      sw.record(t, t + slow, KiB4);
      t += BACKOFF_MS + 100;
      expect(sw.allowed(t)).toBe(true);
    }
  });

  it('allows large transfers more time before a call counts as slow', () => {
    const sw = new SyncSwitch();
    const MiB = 1024 * 1024;
    for (let i = 0; i < 100; i++) sw.record(i * 10, i * 10 + 1, MiB); // 1 ms for 1 MiB: a page-cache copy
    expect(sw.allowed(2000)).toBe(true);
  });
});

describe('pread and readCachedNow (page-cache reads that never wait, with the addon)', () => {
  const cached = addonFunctions('readCached') !== undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-file-io-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'data');
  const content = crypto.randomBytes(256 * 1024 + 100);
  fs.writeFileSync(file, content);

  it.skipIf(!cached)('readCachedNow fills a buffer from a cached file, and says false past the end instead of reading short', () => {
    const fd = fs.openSync(file, 'r');
    try {
      fs.readFileSync(file); // in the page cache now
      const dst = Buffer.alloc(4096);
      expect(readCachedNow(fd, dst, 8192)).toBe(true);
      expect(dst.equals(content.subarray(8192, 8192 + 4096))).toBe(true);
      expect(readCachedNow(fd, Buffer.alloc(4096), content.length - 100)).toBe(false); // only 100 bytes left
      expect(readCachedNow(1_000_000, Buffer.alloc(16), 0)).toBe(false); // EBADF is false: the ordinary read reports it
    } finally {
      fs.closeSync(fd);
    }
  });

  it('pread returns every byte and the true count at the end of the file', async () => {
    const fd = fs.openSync(file, 'r');
    try {
      for (const [at, len] of [[0, 4096], [4096 * 3 + 17, 65536], [0, 256 * 1024], [content.length - 100, 4096]] as const) {
        const dst = Buffer.alloc(len);
        const n = await pread(fd, dst, at);
        expect(n).toBe(Math.min(len, content.length - at));
        expect(dst.subarray(0, n).equals(content.subarray(at, at + n))).toBe(true);
      }
    } finally {
      fs.closeSync(fd);
    }
  });
});
