/**
 * DataDirLock: one daemon owns a data directory. The lock is `<data>/daemon.lock`, created with
 * O_EXCL and holding the owner's pid, start time and API address. A lock whose pid is gone (a
 * daemon killed with SIGKILL) is stale and taken over; a live owner makes start-up fail with
 * ERR_DATA_DIR_LOCKED, naming the pid and its API address.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../errors.js';

export interface LockInfo {
  pid: number;
  startedAt: string;
  http?: string;
}

export const LOCK_FILE = 'daemon.lock';

/** Lock files held by this process: a lock naming our own pid is only stale if we do not hold it. */
const HELD = new Set<string>();

export class DataDirLock {
  readonly dir: string;
  readonly #file: string;
  #held = false;

  private constructor(dir: string) {
    this.dir = dir;
    this.#file = path.join(dir, LOCK_FILE);
  }

  /** Creates the directory if needed and takes the lock. */
  static acquire(dir: string): DataDirLock {
    try {
      fs.mkdirSync(dir, { recursive: true });
      fs.accessSync(dir, fs.constants.W_OK);
    } catch (err) {
      throw new ReboundError('ERR_DATA_DIR_UNUSABLE', `cannot use data directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    const lock = new DataDirLock(dir);
    lock.#take();
    return lock;
  }

  /** Records extra facts (the API address) for other processes. */
  update(info: Partial<LockInfo>): void {
    const current = readLock(this.#file) ?? { pid: process.pid, startedAt: new Date().toISOString() };
    const tmp = this.#file + '.tmp';
    fs.writeFileSync(tmp, JSON.stringify({ ...current, ...info }) + '\n');
    fs.renameSync(tmp, this.#file);
  }

  release(): void {
    if (!this.#held) return;
    this.#held = false;
    HELD.delete(this.#file);
    const info = readLock(this.#file);
    if (info?.pid === process.pid) fs.rmSync(this.#file, { force: true });
  }

  #take(): void {
    const info: LockInfo = { pid: process.pid, startedAt: new Date().toISOString() };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        fs.writeFileSync(this.#file, JSON.stringify(info) + '\n', { flag: 'wx' });
        this.#held = true;
        HELD.add(this.#file);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new ReboundError('ERR_DATA_DIR_UNUSABLE', `cannot create ${this.#file}: ${(err as Error).message}`, { cause: err });
        }
      }
      const owner = readLock(this.#file);
      const live = owner && (owner.pid === process.pid ? HELD.has(this.#file) : isAlive(owner.pid));
      if (owner && live) {
        throw new ReboundError(
          'ERR_DATA_DIR_LOCKED',
          `data directory ${this.dir} is in use by another rebound daemon (pid ${owner.pid}` +
            `${owner.http ? `, API http://${owner.http}` : ''}); stop it or use a different --data`,
          { details: { ...owner } },
        );
      }
      // Stale (owner died) or unreadable: remove and retry.
      fs.rmSync(this.#file, { force: true });
    }
    throw new ReboundError('ERR_DATA_DIR_LOCKED', `could not take the lock ${this.#file}`);
  }
}

export function readLock(file: string): LockInfo | undefined {
  try {
    const info = JSON.parse(fs.readFileSync(file, 'utf8')) as LockInfo;
    return Number.isInteger(info.pid) ? info : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
