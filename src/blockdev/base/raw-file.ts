/**
 * RawFileDevice: a raw disk image file or block device, opened read-only. Writes are impossible by
 * construction (the descriptor is O_RDONLY and the write path rejects with EROFS), so a backup
 * image published this way is never modified; its mtime stays as it was.
 *
 * Extents: Node has no SEEK_DATA/SEEK_HOLE, and guessing from content would cost a full read, so
 * every range is reported as data. That is always correct, only less efficient for sparse images
 * (clients read zeroes instead of skipping holes).
 *
 * Reads go through util/file-io.ts: small ones synchronously while the page cache serves them,
 * everything else on libuv's thread pool, so many requests proceed in parallel.
 */
import fs from 'node:fs';
import { BlockError, ReboundError } from '../../errors.js';
import type { BlockDevice, Capabilities, Extent } from '../types.js';
import { readOnlyCapabilities } from '../types.js';
import { pread } from '../../util/file-io.js';

export class RawFileDevice implements BlockDevice {
  readonly name = 'raw-file';
  readonly path: string;
  readonly size: number;
  #fd: number | undefined;

  private constructor(path: string, fd: number, size: number) {
    this.path = path;
    this.#fd = fd;
    this.size = size;
  }

  /** Opens `path` read-only. Fails with ERR_SOURCE_OPEN_FAILED if it is missing or not a file/device. */
  static async open(path: string): Promise<RawFileDevice> {
    let fd: number;
    try {
      fd = await new Promise<number>((resolve, reject) =>
        fs.open(path, fs.constants.O_RDONLY, (err, n) => (err ? reject(err) : resolve(n))),
      );
    } catch (err) {
      throw new ReboundError('ERR_SOURCE_OPEN_FAILED', `cannot open image '${path}': ${(err as Error).message}`, { cause: err });
    }
    try {
      const size = await deviceSize(fd, path);
      return new RawFileDevice(path, fd, size);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  capabilities(): Capabilities {
    return readOnlyCapabilities();
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    const fd = this.#fd;
    if (fd === undefined) throw new BlockError('ESHUTDOWN', 'image is closed');
    let n: number;
    try {
      n = await pread(fd, dst, offset);
    } catch (err) {
      throw new BlockError('EIO', `read of ${this.path} failed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    if (n < dst.length) throw new BlockError('EIO', `${this.path} is shorter than expected (truncated while exported?)`);
  }

  async write(): Promise<void> {
    throw new BlockError('EROFS', 'raw image exports are read-only');
  }

  async flush(): Promise<void> {
    // Nothing is ever written; there is nothing to make stable.
  }

  async trim(): Promise<void> {
    throw new BlockError('EROFS', 'raw image exports are read-only');
  }

  async zero(): Promise<void> {
    throw new BlockError('EROFS', 'raw image exports are read-only');
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length, hole: false, zero: false }];
  }

  async close(): Promise<void> {
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
  }
}

/** Size of a regular file, or of a block device (from sysfs; fstat reports 0 for devices). */
export async function deviceSize(fd: number, path: string): Promise<number> {
  const st = await new Promise<fs.Stats>((resolve, reject) => fs.fstat(fd, (e, s) => (e ? reject(e) : resolve(s))));
  if (st.isFile()) return st.size;
  if (st.isBlockDevice()) {
    const major = Number((BigInt(st.rdev) >> 8n) & 0xfffn);
    const minor = Number((BigInt(st.rdev) & 0xffn) | ((BigInt(st.rdev) >> 12n) & 0xfff00n));
    try {
      const sectors = await fs.promises.readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
      return Number(sectors.trim()) * 512;
    } catch (err) {
      throw new ReboundError('ERR_SOURCE_OPEN_FAILED', `cannot find the size of block device '${path}'`, { cause: err });
    }
  }
  throw new ReboundError('ERR_SOURCE_OPEN_FAILED', `'${path}' is neither a regular file nor a block device`);
}
