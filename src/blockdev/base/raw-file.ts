/**
 * RawFileDevice: a raw disk image file or block device, opened read-only. Writes are impossible by
 * construction (the descriptor is O_RDONLY and the write path is ReadOnlyDevice's: EROFS), so a backup
 * image published this way is never modified; its mtime stays as it was.
 *
 * Extents: a regular file's holes come from SEEK_DATA/SEEK_HOLE (DiskFile.extents, through the
 * native addon in src/native), so `nbdinfo --map`, `qemu-img map`, nbdcopy and rebound's own
 * backups skip them. Without the addon, and for block devices, every range is reported as data:
 * always correct, only less efficient (clients read zeroes instead of skipping holes). Data is
 * never reported as a hole.
 *
 * `withFileSpan` lets the NBD server send READ replies from the file with sendfile(2) (no copy in the
 * process); the image is opened read-only, so what is sent is what a read would have returned
 * (a file changed by someone else behind rebound's back is the operator's problem either way).
 *
 * Reads go through DiskFile (disk-file.ts) and util/file-io.ts: small ones synchronously while the
 * page cache serves them, everything else on libuv's thread pool, so many requests proceed in
 * parallel.
 */
import { errorText, ReboundError } from '../../errors.js';
import { allData } from '../emulate.js';
import type { Capabilities, Extent, FileSpan } from '../types.js';
import { DiskFile, isGateRefusal, type OpenGate } from './disk-file.js';
import { ReadOnlyDevice } from './read-only.js';

export class RawFileDevice extends ReadOnlyDevice {
  readonly name = 'raw-file';
  protected override readonly readOnlyMessage = 'raw image exports are read-only';
  readonly path: string;
  readonly size: number;
  readonly #file: DiskFile;

  private constructor(file: DiskFile) {
    super();
    this.#file = file;
    this.path = file.path;
    this.size = file.length;
  }

  /**
   * Opens `path` read-only. Fails with ERR_SOURCE_OPEN_FAILED if it is missing or not a file/device,
   * or with the gate's error (ERR_PATH_NOT_ALLOWED) if the gate refuses what was opened.
   */
  static async open(path: string, opts: { gate?: OpenGate } = {}): Promise<RawFileDevice> {
    try {
      return new RawFileDevice(await DiskFile.open(path, { write: false, gate: opts.gate }));
    } catch (err) {
      if (isGateRefusal(err)) throw err;
      throw new ReboundError('ERR_SOURCE_OPEN_FAILED', `cannot open image '${path}': ${errorText(err)}`, { cause: err });
    }
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    return this.#file.read(dst, offset);
  }

  readNow(dst: Uint8Array, offset: number): boolean {
    return this.#file.readNow(dst, offset);
  }

  /** Every range is itself in the file, which this device never changes (it is opened read-only). */
  async withFileSpan(offset: number, _length: number, send: (span: FileSpan) => Promise<void>): Promise<boolean> {
    await send({ fd: this.#file.descriptor, position: offset });
    return true;
  }

  #caps: Capabilities | undefined;

  override capabilities(): Capabilities {
    // Asked per request: computed once.
    this.#caps ??= this.#file.canSeekHoles ? { ...super.capabilities(), canExtents: true } : super.capabilities();
    return this.#caps;
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    return this.#file.canSeekHoles ? this.#file.extents(offset, length) : allData(offset, length);
  }

  close(): Promise<void> {
    return this.#file.close();
  }
}
