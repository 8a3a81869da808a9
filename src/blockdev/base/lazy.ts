/**
 * LazyDevice: stands in for a device that is costly to open (a restore point's index can be tens of
 * MiB) until the first call that needs it. Size and capabilities are known up front; the real
 * device is opened once, by the first caller, and shared by all. A failed open is retried on the
 * next call and fails that call with EIO.
 */
import { BlockError, errorText } from '../../errors.js';
import type { BlockDevice, Capabilities, Extent, IoOptions, WriteOptions, ZeroOptions } from '../types.js';

export class LazyDevice implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly #caps: Capabilities;
  readonly #open: () => Promise<BlockDevice>;
  #device: Promise<BlockDevice> | undefined;
  #closed = false;

  constructor(name: string, size: number, caps: Capabilities, open: () => Promise<BlockDevice>) {
    this.name = name;
    this.size = size;
    this.#caps = caps;
    this.#open = open;
  }

  get opened(): boolean {
    return this.#device !== undefined;
  }

  capabilities(): Capabilities {
    return this.#caps;
  }

  async read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    return (await this.#get()).read(dst, offset, opts);
  }
  async write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return (await this.#get()).write(src, offset, opts);
  }
  async flush(opts?: IoOptions): Promise<void> {
    return (await this.#get()).flush(opts);
  }
  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return (await this.#get()).trim(offset, length, opts);
  }
  async zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return (await this.#get()).zero(offset, length, opts);
  }
  async extents(offset: number, length: number, opts?: IoOptions): Promise<Extent[]> {
    return (await this.#get()).extents(offset, length, opts);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const d = this.#device;
    this.#device = undefined;
    if (d) await d.then((dev) => dev.close(), () => undefined);
  }

  #get(): Promise<BlockDevice> {
    if (this.#closed) return Promise.reject(new BlockError('ESHUTDOWN', 'device is closed'));
    if (!this.#device) {
      const opening = this.#open().catch((err: unknown) => {
        this.#device = undefined;
        throw new BlockError('EIO', `cannot open ${this.name}: ${errorText(err)}`, { cause: err });
      });
      this.#device = opening;
    }
    return this.#device;
  }
}
