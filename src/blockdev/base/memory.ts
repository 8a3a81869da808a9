/**
 * MemoryDevice: a writable, sparse, volatile device held in RAM in 64 KiB pages. Used by tests and
 * by `--export NAME=memory:SIZE` scratch exports. Unwritten pages are holes that read as zero.
 * Every write is visible at once to every connection, so flush is a no-op and multi-conn is safe.
 */
import { BlockError } from '../../errors.js';
import type { BlockDevice, Capabilities, Extent, ZeroOptions } from '../types.js';
import { writableCapabilities } from '../types.js';

const PAGE = 64 * 1024;

export class MemoryDevice implements BlockDevice {
  readonly name = 'memory';
  readonly size: number;
  readonly #pages = new Map<number, Buffer>();
  #closed = false;

  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid memory device size ${size}`);
    this.size = size;
  }

  /** Bytes held in RAM. */
  get allocatedBytes(): number {
    return this.#pages.size * PAGE;
  }

  capabilities(): Capabilities {
    return writableCapabilities();
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    this.#checkOpen();
    this.#forEachPage(offset, dst.length, (page, pageOff, len, bufOff) => {
      const data = this.#pages.get(page);
      if (data) dst.set(data.subarray(pageOff, pageOff + len), bufOff);
      else dst.fill(0, bufOff, bufOff + len);
    });
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.#checkOpen();
    this.#forEachPage(offset, src.length, (page, pageOff, len, bufOff) => {
      let data = this.#pages.get(page);
      if (!data) {
        data = Buffer.alloc(PAGE);
        this.#pages.set(page, data);
      }
      data.set(src.subarray(bufOff, bufOff + len), pageOff);
    });
  }

  async flush(): Promise<void> {
    this.#checkOpen();
  }

  async trim(offset: number, length: number): Promise<void> {
    this.#punch(offset, length);
  }

  async zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    if (opts?.noHole) {
      this.#checkOpen();
      this.#forEachPage(offset, length, (page, pageOff, len) => {
        let data = this.#pages.get(page);
        if (!data) {
          data = Buffer.alloc(PAGE);
          this.#pages.set(page, data);
        }
        data.fill(0, pageOff, pageOff + len);
      });
      return;
    }
    this.#punch(offset, length);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.#checkOpen();
    const out: Extent[] = [];
    this.#forEachPage(offset, length, (page, _pageOff, len, bufOff) => {
      const hole = !this.#pages.has(page);
      const last = out[out.length - 1];
      if (last && last.hole === hole) last.length += len;
      else out.push({ offset: offset + bufOff, length: len, hole, zero: hole });
    });
    return out;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#pages.clear();
  }

  #punch(offset: number, length: number): void {
    this.#checkOpen();
    this.#forEachPage(offset, length, (page, pageOff, len) => {
      if (len === PAGE) this.#pages.delete(page);
      else this.#pages.get(page)?.fill(0, pageOff, pageOff + len);
    });
  }

  #forEachPage(offset: number, length: number, fn: (page: number, pageOff: number, len: number, bufOff: number) => void): void {
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const page = Math.floor(pos / PAGE);
      const pageOff = pos - page * PAGE;
      const len = Math.min(PAGE - pageOff, end - pos);
      fn(page, pageOff, len, pos - offset);
      pos += len;
    }
  }

  #checkOpen(): void {
    if (this.#closed) throw new BlockError('ESHUTDOWN', 'memory device is closed');
  }
}
