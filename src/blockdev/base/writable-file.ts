/**
 * WritableFileDevice: a raw file or block device opened for writing; the target of `rebound
 * restore` and of a session's migration (after the switch it *is* the VM's disk).
 *
 * Design notes:
 *  - The device shows `size` bytes. A regular file is created if missing and grown to `size` if
 *    shorter; it is never shrunk (a longer file keeps its tail, the device does not show it). A
 *    block device must hold at least `size` bytes.
 *  - `fresh`: this open left the file empty (created, or emptied because `startOver` asked for a
 *    new copy): it reads as zeroes, so a copier need not write zero ranges. A block device is never
 *    fresh (old data may be there).
 *  - Flush is fdatasync of the one descriptor every caller shares: multi-conn is safe. FUA is a
 *    flush after the write; WRITE_ZEROES writes zeroes (Node has no fallocate), so it is not fast;
 *    there is no trim and extents report data (no SEEK_DATA). See emulate.ts.
 *  - Out of space is ENOSPC naming the file, and the device stays usable.
 */
import { BlockError, errorText, ReboundError } from '../../errors.js';
import { allData, withFuaByFlush, zeroByWriting } from '../emulate.js';
import type { BlockDevice, Capabilities, Extent, IoOptions, WriteOptions, ZeroOptions } from '../types.js';
import { writableCapabilities } from '../types.js';
import { DiskFile, isGateRefusal, type OpenGate } from './disk-file.js';

export interface WritableFileOptions {
  /** Empty a regular file first (a new copy); without it its content is kept (a resumed copy). */
  startOver?: boolean;
  /** Checks what was opened (or the directory a new file is created in) before it is used. */
  gate?: OpenGate;
}

export class WritableFileDevice implements BlockDevice {
  readonly name = 'writable-file';
  /** The path as given. */
  readonly spec: string;
  readonly size: number;
  /** This open left the file empty: it reads as zeroes. */
  readonly fresh: boolean;
  readonly #file: DiskFile;

  private constructor(file: DiskFile, size: number, fresh: boolean) {
    this.#file = file;
    this.spec = file.path;
    this.size = size;
    this.fresh = fresh;
  }

  /**
   * Opens (or creates) `path` as a device of `size` bytes. Fails with ERR_TARGET_OPEN_FAILED when
   * the path cannot be opened or created, is neither a file nor a block device, or is a block
   * device smaller than `size`.
   */
  static async open(path: string, size: number, opts: WritableFileOptions = {}): Promise<WritableFileDevice> {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid device size ${size}`);
    let file: DiskFile;
    try {
      file = await DiskFile.open(path, { write: true, create: true, gate: opts.gate });
    } catch (err) {
      if (isGateRefusal(err)) throw err;
      throw new ReboundError('ERR_TARGET_OPEN_FAILED', `cannot open target ${path}: ${errorText(err)}`, { cause: err });
    }
    try {
      if (file.kind === 'block-device') {
        if (file.length < size) throw new ReboundError('ERR_TARGET_OPEN_FAILED', `target ${path} has ${file.length} bytes; the disk needs ${size}`);
        return new WritableFileDevice(file, size, false);
      }
      // A new file, or one a new copy starts into, begins as all holes.
      const fresh = file.created || (opts.startOver ?? false);
      if (fresh) await file.truncate(0);
      if (file.length < size) await file.truncate(size);
      return new WritableFileDevice(file, size, fresh);
    } catch (err) {
      await file.close();
      if (err instanceof ReboundError) throw err;
      throw new ReboundError('ERR_TARGET_OPEN_FAILED', `cannot prepare target ${path}: ${errorText(err)}`, { cause: err });
    }
  }

  /**
   * The file as a sink for writers on other threads (a restore's chunk workers write into it
   * directly): its descriptor, valid until close(), and its path.
   */
  fileSink(): { fd: number; path: string } {
    return { fd: this.#file.fd, path: this.#file.path };
  }

  capabilities(): Capabilities {
    return { ...writableCapabilities(), canTrim: false, canFastZero: false, canExtents: false };
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    return this.#file.read(dst, offset);
  }

  write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return withFuaByFlush(opts, () => this.flush(), () => this.#file.write(src, offset));
  }

  flush(_opts?: IoOptions): Promise<void> {
    return this.#file.sync();
  }

  async trim(): Promise<void> {
    throw new BlockError('ENOTSUP', 'trim is not supported by a file target');
  }

  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return zeroByWriting(this, offset, length, opts);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    return allData(offset, length);
  }

  close(): Promise<void> {
    return this.#file.close();
  }
}
