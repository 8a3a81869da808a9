import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataDirLock, LOCK_FILE, readLock } from '../../../src/daemon/data-dir.js';
import { tempDir } from '../../helpers/images.js';

describe('DataDirLock', () => {
  it('creates the directory, records the owner, refuses a live second owner, releases', () => {
    const dir = path.join(tempDir(), 'nested', 'data');
    const lock = DataDirLock.acquire(dir);
    lock.update({ http: '127.0.0.1:1' });
    expect(readLock(path.join(dir, LOCK_FILE))).toMatchObject({ pid: process.pid, http: '127.0.0.1:1' });
    // Same pid counts as "ours" only through the same object: simulate another live process (pid 1).
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: 1, startedAt: 'x', http: '10.0.0.1:5' }));
    expect(() => DataDirLock.acquire(dir)).toThrow(/in use by another rebound daemon \(pid 1, API http:\/\/10\.0\.0\.1:5\)/);
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: process.pid, startedAt: 'x' }));
    lock.release();
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });
  it('takes over a stale lock left by a killed daemon', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: 2 ** 22 + 12345, startedAt: 'x' }));
    const lock = DataDirLock.acquire(dir);
    expect(readLock(path.join(dir, LOCK_FILE))!.pid).toBe(process.pid);
    lock.release();
  });
  it('says clearly when the directory cannot be used', () => {
    const file = path.join(tempDir(), 'afile');
    fs.writeFileSync(file, '');
    expect(() => DataDirLock.acquire(path.join(file, 'sub'))).toThrow(/cannot use data directory/);
  });
});
