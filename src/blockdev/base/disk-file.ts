/**
 * DiskFile: an open raw disk image or block device, shared by the read-only RawFileDevice and the
 * writable WritableFileDevice: its descriptor, its kind and length (fstat for a file, sysfs for a
 * block device, where fstat says 0), and positional I/O whose failures are BlockErrors naming the
 * file. ENOSPC (and EDQUOT, EFBIG) stays ENOSPC; every other system error is EIO.
 *
 * Opening fails with the system error (or an Error saying the path is neither a file nor a block
 * device); the device that opens it decides which domain error that is.
 *
 * With a gate (util/path-policy.ts) the open is checked by what it reached, not by the name it was
 * given: the descriptor goes to `gate.opened` before anything is read or written, and a file that
 * must be created is created through its parent directory's descriptor (`/proc/self/fd/N/NAME`,
 * i.e. openat), after the gate admitted that directory, with O_EXCL so a symlink planted under
 * the name is not followed. Nothing is created outside what the gate allows.
 */
import fs from 'node:fs';
import { promisify } from 'node:util';
import nodePath from 'node:path';
import { BlockError, ReboundError } from '../../errors.js';
import { fdatasync, pread, pwrite, readCachedNow } from '../../util/file-io.js';
import { seeker } from '../../native/seek.js';
import { allData } from '../emulate.js';
import type { Extent } from '../types.js';

const open = promisify(fs.open);
const fstat = promisify(fs.fstat);
const ftruncate = promisify(fs.ftruncate);
const close = promisify(fs.close);

export type DiskFileKind = 'file' | 'block-device';

/** Checks an open descriptor before it is used; throws to refuse it (a PathPolicy gate is one). */
export interface OpenGate {
  opened(fd: number): void;
}

export class DiskFile {
  readonly path: string;
  readonly kind: DiskFileKind;
  /** True when this open created the file (it did not exist). */
  readonly created: boolean;
  #length: number;
  #fd: number | undefined;

  private constructor(path: string, fd: number, kind: DiskFileKind, length: number, created: boolean) {
    this.path = path;
    this.#fd = fd;
    this.kind = kind;
    this.#length = length;
    this.created = created;
  }

  /** Opens `path` read-only, or read-write (`create`: a missing regular file is created empty). */
  static async open(path: string, mode: { write: boolean; create?: boolean; gate?: OpenGate }): Promise<DiskFile> {
    let fd: number;
    let created = false;
    if (!mode.write) {
      fd = await open(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } else {
      try {
        fd = await open(path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !mode.create) throw err;
        fd = await createFile(path, mode.gate);
        created = true;
      }
    }
    try {
      mode.gate?.opened(fd);
      const { kind, length } = await describe(fd, path);
      return new DiskFile(path, fd, kind, length, created);
    } catch (err) {
      await close(fd).catch(() => undefined);
      throw err;
    }
  }

  /** Bytes in the file or device now. */
  get length(): number {
    return this.#length;
  }

  /** Fills `dst` from `offset`; a file shorter than that (truncated behind our back) is EIO. */
  async read(dst: Uint8Array, offset: number): Promise<void> {
    let n: number;
    try {
      n = await pread(this.#open(), dst, offset);
    } catch (err) {
      throw ioError(err, `reading ${this.path}`);
    }
    if (n < dst.length) throw new BlockError('EIO', `${this.path} is shorter than expected (truncated while in use?)`);
  }

  /** Fills `dst` from `offset` at once when the page cache holds all of it; false otherwise (see BlockDevice.readNow). */
  readNow(dst: Uint8Array, offset: number): boolean {
    return this.#fd !== undefined && readCachedNow(this.#fd, dst, offset);
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    try {
      await pwrite(this.#open(), src, offset);
    } catch (err) {
      throw ioError(err, `writing ${this.path}`);
    }
  }

  async sync(): Promise<void> {
    try {
      await fdatasync(this.#open());
    } catch (err) {
      throw ioError(err, `syncing ${this.path}`);
    }
  }

  /** Sets a regular file's length (a block device's is fixed). */
  async truncate(length: number): Promise<void> {
    if (this.kind !== 'file') throw new TypeError(`${this.path} is a block device: its size is fixed`);
    try {
      await ftruncate(this.#open(), length);
    } catch (err) {
      throw ioError(err, `resizing ${this.path}`);
    }
    this.#length = length;
  }

  /** True when `extents` can tell holes (a regular file and the native addon built: native/seek.ts). */
  get canSeekHoles(): boolean {
    return this.kind === 'file' && seeker() !== undefined;
  }

  /**
   * Data and holes of [offset, offset+length) from SEEK_DATA/SEEK_HOLE, at most `max` extents
   * (the answer may then stop short; callers ask again from where it ended). Never reports data as a
   * hole: without the addon, on a block device, or when a seek fails or answers something
   * inconsistent, the rest of the range is reported as data.
   */
  extents(offset: number, length: number, max = 1024): Extent[] {
    const end = offset + length;
    const s = this.kind === 'file' ? seeker() : undefined;
    if (!s || length <= 0) return allData(offset, length);
    const fd = this.#open();
    const out: Extent[] = [];
    const push = (o: number, e: number, hole: boolean): void => {
      const last = out[out.length - 1];
      if (last && last.hole === hole && last.offset + last.length === o) last.length += e - o;
      else out.push({ offset: o, length: e - o, hole, zero: hole });
    };
    let pos = offset;
    try {
      while (pos < end && out.length < max) {
        const data = s.seekData(fd, pos);
        if (data < 0 || data >= end) {
          push(pos, end, true);
          return out;
        }
        if (data < pos) break; // inconsistent: the rest is data
        if (data > pos) {
          push(pos, data, true);
          pos = data;
          continue;
        }
        const hole = s.seekHole(fd, pos);
        if (hole <= pos) break; // the file shrank or the answer makes no sense: the rest is data
        const e = Math.min(hole, end);
        push(pos, e, false);
        pos = e;
      }
    } catch {
      // EINVAL (no SEEK_DATA on this filesystem) or another failure: the rest is data.
    }
    if (pos < end && out.length < max) push(pos, end, false);
    return out;
  }

  /** The open descriptor, for writers on other threads (it stays valid until close()). */
  get fd(): number {
    return this.#open();
  }

  get closed(): boolean {
    return this.#fd === undefined;
  }

  /** Closes the descriptor; idempotent. */
  async close(): Promise<void> {
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) await close(fd).catch(() => undefined);
  }

  /** The open descriptor (for sendfile by a front end: see BlockDevice.withFileSpan); ESHUTDOWN once closed. */
  get descriptor(): number {
    return this.#open();
  }

  #open(): number {
    if (this.#fd === undefined) throw new BlockError('ESHUTDOWN', `${this.path} is closed`);
    return this.#fd;
  }
}

/** A system error of file I/O as a BlockError: out of space stays ENOSPC, everything else is EIO. */
/** A gate's refusal passes through the opening devices unwrapped (it is not an open failure). */
export function isGateRefusal(err: unknown): boolean {
  return err instanceof ReboundError && err.code === 'ERR_PATH_NOT_ALLOWED';
}

/**
 * Creates `path` (O_EXCL: never an existing file, never through a symlink at the name). With a
 * gate, through the parent directory's descriptor once the gate admitted it.
 */
async function createFile(path: string, gate: OpenGate | undefined): Promise<number> {
  const flags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL;
  if (!gate) return open(path, flags, 0o644);
  const dir = await open(nodePath.dirname(path), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    gate.opened(dir);
    return await open(`/proc/self/fd/${dir}/${nodePath.basename(path)}`, flags | fs.constants.O_NOFOLLOW, 0o644);
  } finally {
    await close(dir).catch(() => undefined);
  }
}

export function ioError(err: unknown, what: string): BlockError {
  if (err instanceof BlockError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') {
    return new BlockError('ENOSPC', `${what}: no space left on the target (${code})`, { cause: err });
  }
  return new BlockError('EIO', `${what} failed: ${code ?? (err as Error).message}`, { cause: err });
}

/** A regular file's length, or a block device's (from sysfs: fstat reports 0 for devices). */
async function describe(fd: number, path: string): Promise<{ kind: DiskFileKind; length: number }> {
  const st = await fstat(fd);
  if (st.isFile()) return { kind: 'file', length: st.size };
  if (!st.isBlockDevice()) throw new Error(`'${path}' is neither a regular file nor a block device`);
  const major = Number((BigInt(st.rdev) >> 8n) & 0xfffn);
  const minor = Number((BigInt(st.rdev) & 0xffn) | ((BigInt(st.rdev) >> 12n) & 0xfff00n));
  try {
    const sectors = await fs.promises.readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
    return { kind: 'block-device', length: Number(sectors.trim()) * 512 };
  } catch (err) {
    throw new Error(`cannot find the size of block device '${path}'`, { cause: err });
  }
}
