/**
 * CowOverlay: a persistent, crash-safe copy-on-write layer over any read-only device. The device
 * below is never written; every write of the client lands in the overlay directory (format.ts
 * describes the files and the crash rules).
 *
 * Design notes:
 *  - Blocks are `blockSize` bytes (default 4 KiB: the common VM write is 4 KiB random, which then
 *    needs no copy-up; see tools/bench/cow for the measurement). The data file maps blocks
 *    directly, so an aligned write of any length is one pwrite.
 *  - A write that covers part of a block reads the block's current content (from the base, the
 *    data file or zeroes), merges, and writes the whole block ("copy-up"). Every write-path call
 *    holds a range lock over its blocks, so copy-ups and other writes of the same block are
 *    serialised and concurrent writes to different blocks proceed in parallel. Reads take no lock.
 *  - TRIM and WRITE_ZEROES mark whole blocks ZERO (map only, no data I/O: fast zero is supported);
 *    partial blocks at the edges are zero-filled by copy-up. WRITE_ZEROES with NO_HOLE writes real
 *    zero data instead, so later writes there never need new space.
 *  - FLUSH is export-wide: it syncs the data of every connection, so multi-conn is safe.
 *    A FUA write is a write followed by a flush.
 *  - Quota: the overlay refuses with ENOSPC a write that would make its DATA blocks exceed
 *    `maxBytes`; TRIM/zero make room again. A real ENOSPC/EDQUOT from the filesystem is reported as
 *    ENOSPC too, and the overlay stays usable.
 *  - Left out on purpose: punching holes in the data file when blocks become ZERO (Node has no
 *    fallocate); space of zeroed blocks is reused when they are written again.
 */
import fs from 'node:fs';
import { promisify } from 'node:util';
import path from 'node:path';
import { BlockError, ReboundError } from '../../../errors.js';
import { fdatasync, pread, pwrite } from '../../../util/file-io.js';
import { Mutex } from '../../../util/mutex.js';
import { RangeLock } from '../../../util/range-lock.js';
import { withFuaByFlush, writeZeroes } from '../../emulate.js';
import { Layer } from '../../layer.js';
import type { BlockDevice, Capabilities, Extent, IoOptions, WriteOptions, ZeroOptions } from '../../types.js';
import { MAX_REQUEST_BYTES, writableCapabilities } from '../../types.js';
import { BASE, BlockMap, DATA, PAGE_BYTES, BLOCKS_PER_PAGE, ZERO } from './block-map.js';
import {
  createOverlayFiles,
  DATA_FILE,
  FORMAT_NAME,
  FORMAT_VERSION,
  isValidBlockSize,
  MAP_FILE,
  readHeader,
  type OverlayHeader,
} from './format.js';

export const DEFAULT_COW_BLOCK_SIZE = 4096;
/** Most extents one extents() answer returns (callers loop on short answers). */
const MAX_EXTENTS = 4096;

export interface CowOverlayOptions {
  /** The overlay directory; created with empty files if it holds no overlay yet. */
  dir: string;
  /** Identity of the device below (a path, a restore point), checked when an overlay is reopened. */
  baseId: string;
  /** Block size of a new overlay, bytes (power of two, 512 B..1 MiB). Default 4 KiB. */
  blockSize?: number;
  /** Quota: the most data the overlay may hold, bytes. Undefined: no limit but the filesystem. */
  maxBytes?: number;
}

export interface OverlayStats {
  dir: string;
  blockSize: number;
  /** Bytes of data held (DATA blocks x block size); what the quota limits. */
  allocatedBytes: number;
  dataBlocks: number;
  zeroBlocks: number;
  maxBytes: number | null;
  /** Disk space the overlay files use. */
  diskBytes: number;
  writes: number;
  bytesWritten: number;
  flushes: number;
  createdAt: string;
  lastWriteAt: string | null;
}

export class CowOverlay extends Layer {
  readonly name = 'cow';
  readonly dir: string;
  readonly header: OverlayHeader;
  maxBytes: number | undefined;
  readonly #bs: number;
  readonly #map: BlockMap;
  readonly #lock = new RangeLock();
  readonly #flushLock = new Mutex();
  /** Map pages known to be allocated in the map file (rule 3 in format.ts), or being allocated. */
  readonly #mapPagesReady = new Map<number, Promise<void>>();
  #dataFd: number;
  #mapFd: number;
  #reserved = 0; // DATA blocks promised to in-flight writes (quota)
  #dataDirty = false;
  #closed = false;
  #writes = 0;
  #bytesWritten = 0;
  #flushes = 0;
  #lastWriteAt: Date | undefined;

  private constructor(next: BlockDevice, dir: string, header: OverlayHeader, dataFd: number, mapFd: number, map: BlockMap, maxBytes: number | undefined) {
    super(next);
    this.dir = dir;
    this.header = header;
    this.#bs = header.blockSize;
    this.#dataFd = dataFd;
    this.#mapFd = mapFd;
    this.#map = map;
    this.maxBytes = maxBytes;
  }

  /** Opens the overlay in `opts.dir` over `next`, creating it if the directory holds none. */
  static async open(next: BlockDevice, opts: CowOverlayOptions): Promise<CowOverlay> {
    const dir = path.resolve(opts.dir);
    let header = await readHeader(dir);
    if (!header) {
      const blockSize = opts.blockSize ?? DEFAULT_COW_BLOCK_SIZE;
      if (!isValidBlockSize(blockSize)) throw new RangeError(`invalid overlay block size ${blockSize}`);
      header = {
        format: FORMAT_NAME,
        version: FORMAT_VERSION,
        size: next.size,
        blockSize,
        createdAt: new Date().toISOString(),
        base: { size: next.size, id: opts.baseId },
      };
      await createOverlayFiles(dir, header);
    } else if (header.base.size !== next.size || header.size !== next.size || header.base.id !== opts.baseId) {
      throw new ReboundError(
        'ERR_OVERLAY_BASE_MISMATCH',
        `overlay ${dir} was made for base '${header.base.id}' (${header.base.size} bytes), not '${opts.baseId}' ` +
          `(${next.size} bytes); use another overlay directory or remove this one`,
      );
    }
    const dataFd = await openFd(path.join(dir, DATA_FILE), 'r+');
    const mapFd = await openFd(path.join(dir, MAP_FILE), 'r+').catch(async (err: unknown) => {
      await closeFd(dataFd);
      throw err;
    });
    const map = new BlockMap(Math.ceil(header.size / header.blockSize));
    const overlay = new CowOverlay(next, dir, header, dataFd, mapFd, map, opts.maxBytes);
    try {
      await overlay.#loadMap();
    } catch (err) {
      await Promise.all([closeFd(dataFd), closeFd(mapFd)]);
      throw err;
    }
    return overlay;
  }

  override capabilities(): Capabilities {
    return writableCapabilities({ min: 1, preferred: Math.max(this.#bs, 4096), max: MAX_REQUEST_BYTES });
  }

  stats(): OverlayStats {
    let diskBytes = 0;
    if (!this.#closed) {
      for (const fd of [this.#dataFd, this.#mapFd]) diskBytes += fs.fstatSync(fd).blocks * 512;
    }
    return {
      dir: this.dir,
      blockSize: this.#bs,
      allocatedBytes: this.#map.dataBlocks * this.#bs,
      dataBlocks: this.#map.dataBlocks,
      zeroBlocks: this.#map.zeroBlocks,
      maxBytes: this.maxBytes ?? null,
      diskBytes,
      writes: this.#writes,
      bytesWritten: this.#bytesWritten,
      flushes: this.#flushes,
      createdAt: this.header.createdAt,
      lastWriteAt: this.#lastWriteAt?.toISOString() ?? null,
    };
  }

  /** Byte ranges this overlay shadows (written, trimmed or zeroed), in order. */
  changedRanges(): Array<[offset: number, length: number]> {
    const out: Array<[number, number]> = [];
    for (const r of this.#map.runs(0, this.#map.blocks)) {
      if (r.state === BASE) continue;
      const off = r.first * this.#bs;
      const len = Math.min(this.size, (r.first + r.count) * this.#bs) - off;
      const last = out[out.length - 1];
      if (last && last[0] + last[1] === off) last[1] += len;
      else out.push([off, len]);
    }
    return out;
  }

  // ---- read side --------------------------------------------------------------------------

  override async read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    this.#checkOpen();
    const bs = this.#bs;
    const end = offset + dst.length;
    const runs = this.#map.runs(Math.floor(offset / bs), Math.floor((end - 1) / bs) - Math.floor(offset / bs) + 1);
    if (runs.length === 1) return this.#readRun(runs[0]!.state, dst, offset, opts);
    await Promise.all(
      runs.map((r) => {
        const s = Math.max(offset, r.first * bs);
        const e = Math.min(end, (r.first + r.count) * bs);
        return this.#readRun(r.state, dst.subarray(s - offset, e - offset), s, opts);
      }),
    );
  }

  #readRun(state: number, dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    if (state === DATA) return readData(this.#dataFd, dst, offset);
    if (state === ZERO) {
      dst.fill(0);
      return Promise.resolve();
    }
    return this.next.read(dst, offset, opts);
  }

  override async extents(offset: number, length: number, opts?: IoOptions): Promise<Extent[]> {
    this.#checkOpen();
    const bs = this.#bs;
    const end = offset + length;
    const first = Math.floor(offset / bs);
    const out: Extent[] = [];
    for (const r of this.#map.runs(first, Math.floor((end - 1) / bs) - first + 1)) {
      const s = Math.max(offset, r.first * bs);
      const e = Math.min(end, (r.first + r.count) * bs);
      if (r.state === BASE) {
        const below = await this.next.extents(s, e - s, opts);
        let pos = s;
        for (const x of below) {
          const len = Math.min(x.length, e - pos);
          if (len <= 0) break;
          out.push({ offset: pos, length: len, hole: x.hole, zero: x.zero });
          pos += len;
        }
        if (pos < e) break; // the base answered short: so do we
      } else {
        out.push({ offset: s, length: e - s, hole: r.state === ZERO, zero: r.state === ZERO });
      }
      if (out.length >= MAX_EXTENTS) break;
    }
    return out;
  }

  // ---- write side -------------------------------------------------------------------------

  async write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    this.#checkOpen();
    await withFuaByFlush(opts, () => this.flush(), () => this.#writeLocked(src, offset));
  }

  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    // A trimmed range reads as zeroes afterwards: the base must not show through.
    await this.zero(offset, length, { fua: opts?.fua });
  }

  async zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    this.#checkOpen();
    if (opts?.noHole) {
      // Real zero data, so later writes there never need new space: written, so not fast.
      if (opts.fast) throw new BlockError('ENOTSUP', 'zeroing without holes writes data: not fast');
      await withFuaByFlush(opts, () => this.flush(), () => writeZeroes((src, pos) => this.#writeLocked(src, pos), offset, length));
    } else {
      await withFuaByFlush(opts, () => this.flush(), () => this.#shadowWithZeroes(offset, length));
    }
  }

  async flush(): Promise<void> {
    this.#checkOpen();
    await this.#flushLock.run(async () => {
      // Rule 2 of format.ts: take the pages first, then sync the data they describe.
      const dirty = this.#map.takeDirty();
      if (!this.#dataDirty && dirty.length === 0) return;
      this.#dataDirty = false;
      try {
        await sync(this.#dataFd);
        for (const { page, bytes } of dirty) {
          await this.#mapPagesReady.get(page);
          await writeData(this.#mapFd, bytes, page * PAGE_BYTES);
        }
        if (dirty.length) await sync(this.#mapFd);
        this.#flushes++;
      } catch (err) {
        this.#dataDirty = true;
        this.#map.markDirty(dirty.map((d) => d.page));
        throw err;
      }
    });
  }

  override async close(): Promise<void> {
    if (this.#closed) return;
    let failure: unknown;
    try {
      await this.flush();
    } catch (err) {
      failure = err;
    }
    this.#closed = true;
    await Promise.all([closeFd(this.#dataFd), closeFd(this.#mapFd)]);
    await this.next.close();
    if (failure) throw failure;
  }

  /** Writes `src` at `offset` under the range lock, copying up partial blocks at the edges. */
  async #writeLocked(src: Uint8Array, offset: number): Promise<void> {
    const bs = this.#bs;
    const end = offset + src.length;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    const count = last - first + 1;
    await this.#lock.run(first, last + 1, async () => {
      const newBlocks = this.#map.countNot(first, count, DATA);
      this.#reserveQuota(newBlocks);
      try {
        await this.#prepareMapPages(first, count);
        const alignedStart = first * bs;
        const alignedEnd = Math.min((last + 1) * bs, this.size);
        let buf: Uint8Array = src;
        if (offset !== alignedStart || end !== alignedEnd) {
          const merged = Buffer.allocUnsafe(alignedEnd - alignedStart);
          if (offset !== alignedStart) await this.read(merged.subarray(0, Math.min(bs, alignedEnd - alignedStart)), alignedStart);
          const lastStart = last * bs;
          if (end !== alignedEnd && (last !== first || offset === alignedStart)) {
            await this.read(merged.subarray(lastStart - alignedStart), lastStart);
          }
          merged.set(src, offset - alignedStart);
          buf = merged;
        }
        await writeData(this.#dataFd, buf, alignedStart);
        this.#dataDirty = true;
        this.#map.setRange(first, count, DATA);
      } finally {
        this.#reserved -= newBlocks;
      }
      this.#writes++;
      this.#bytesWritten += src.length;
      this.#lastWriteAt = new Date();
    });
  }

  /** Marks whole blocks ZERO; zero-fills the partial blocks at the edges. */
  async #shadowWithZeroes(offset: number, length: number): Promise<void> {
    const bs = this.#bs;
    const end = offset + length;
    const firstFull = Math.ceil(offset / bs);
    // The device's last block may be short: ending at the device's end covers it fully.
    const endFull = end === this.size ? Math.ceil(end / bs) : Math.floor(end / bs);
    if (firstFull >= endFull) {
      await this.#writeLocked(Buffer.alloc(length), offset);
      return;
    }
    if (offset < firstFull * bs) await this.#writeLocked(Buffer.alloc(firstFull * bs - offset), offset);
    if (endFull * bs < end) await this.#writeLocked(Buffer.alloc(end - endFull * bs), endFull * bs);
    await this.#lock.run(firstFull, endFull, async () => {
      await this.#prepareMapPages(firstFull, endFull - firstFull);
      this.#map.setRange(firstFull, endFull - firstFull, ZERO);
      this.#writes++;
      this.#lastWriteAt = new Date();
    });
  }

  #reserveQuota(newBlocks: number): void {
    if (this.maxBytes !== undefined && newBlocks > 0) {
      const wanted = (this.#map.dataBlocks + this.#reserved + newBlocks) * this.#bs;
      if (wanted > this.maxBytes) {
        throw new BlockError('ENOSPC', `overlay quota of ${this.maxBytes} bytes reached`);
      }
    }
    this.#reserved += newBlocks;
  }

  /** Rule 3 of format.ts: claim map file space for pages this change will dirty. */
  async #prepareMapPages(first: number, count: number): Promise<void> {
    const firstPage = Math.floor(first / BLOCKS_PER_PAGE);
    const lastPage = Math.floor((first + count - 1) / BLOCKS_PER_PAGE);
    for (let p = firstPage; p <= lastPage; p++) {
      let ready = this.#mapPagesReady.get(p);
      if (!ready) {
        ready = writeData(this.#mapFd, new Uint8Array(PAGE_BYTES), p * PAGE_BYTES);
        this.#mapPagesReady.set(p, ready);
        ready.catch(() => this.#mapPagesReady.delete(p));
      }
      await ready;
    }
  }

  async #loadMap(): Promise<void> {
    const size = (await fstat(this.#mapFd)).size;
    const chunk = Buffer.alloc(1024 * 1024);
    for (let pos = 0; pos < size; pos += chunk.length) {
      const { bytesRead: n } = await readFd(this.#mapFd, chunk, 0, chunk.length, pos);
      for (let off = 0; off + PAGE_BYTES <= n; off += PAGE_BYTES) {
        const page = (pos + off) / PAGE_BYTES;
        if (page >= this.#map.pageCount) break;
        const bytes = chunk.subarray(off, off + PAGE_BYTES);
        if (bytes.some((b) => b !== 0)) {
          this.#map.loadPage(page, bytes);
          this.#mapPagesReady.set(page, Promise.resolve());
        }
      }
    }
  }

  #checkOpen(): void {
    if (this.#closed) throw new BlockError('ESHUTDOWN', 'overlay is closed');
  }
}

// ---- file I/O with block errors --------------------------------------------------------------

function ioError(err: NodeJS.ErrnoException, what: string): BlockError {
  const code = err.code === 'ENOSPC' || err.code === 'EDQUOT' || err.code === 'EFBIG' ? 'ENOSPC' : 'EIO';
  return new BlockError(code, `overlay ${what} failed: ${err.code ?? err.message}`, { cause: err });
}

async function readData(fd: number, dst: Uint8Array, position: number): Promise<void> {
  let n: number;
  try {
    n = await pread(fd, dst, position);
  } catch (err) {
    throw ioError(err as NodeJS.ErrnoException, 'read');
  }
  // Past the end of a data file shorter than the device (never expected): zeroes.
  if (n < dst.length) dst.fill(0, n);
}

async function writeData(fd: number, src: Uint8Array, position: number): Promise<void> {
  try {
    await pwrite(fd, src, position);
  } catch (err) {
    throw ioError(err as NodeJS.ErrnoException, 'write');
  }
}

async function sync(fd: number): Promise<void> {
  try {
    await fdatasync(fd);
  } catch (err) {
    throw ioError(err as NodeJS.ErrnoException, 'sync');
  }
}

const openFd = promisify(fs.open);
const closeFd = promisify(fs.close);
const fstat = promisify(fs.fstat);
const readFd = promisify(fs.read);
