/**
 * LazyDevice: stands in for a read-only source that is costly to open (a restore point's index can
 * be tens of MiB) until the first read or extents call. Size and capabilities are known up front;
 * the real device is opened once, by the first caller, and shared by all. A failed open is retried
 * on the next call and fails that call with EIO.
 *
 * Read-only by construction: the write path is ReadOnlyDevice's, so it never opens or reaches the
 * device below (write, trim and zero reject with EROFS; flush has nothing to make stable), and
 * capabilities that offer writing are refused. A real device that turns out writable, or of another size, fails the open.
 */
import { BlockError, errorText } from '../../errors.js';
import type { BlockDevice, Capabilities, Extent, IoOptions } from '../types.js';
import { ReadOnlyDevice } from './read-only.js';

export class LazyDevice extends ReadOnlyDevice {
  readonly name: string;
  readonly size: number;
  readonly #caps: Capabilities;
  readonly #open: () => Promise<BlockDevice>;
  #device: Promise<BlockDevice> | undefined;
  #closed = false;

  constructor(name: string, size: number, caps: Capabilities, open: () => Promise<BlockDevice>) {
    if (caps.canWrite || caps.canTrim || caps.canZero || caps.canFua) {
      throw new TypeError(`LazyDevice ${name} stands in for read-only sources only; its capabilities offer writing`);
    }
    super();
    this.name = name;
    this.size = size;
    this.#caps = caps;
    this.#open = open;
  }

  get opened(): boolean {
    return this.#device !== undefined;
  }

  override capabilities(): Capabilities {
    return this.#caps;
  }

  async read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    return (await this.#get()).read(dst, offset, opts);
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
      const opening = this.#open()
        .then(async (dev) => {
          if (dev.size === this.size && !dev.capabilities().canWrite) return dev;
          await dev.close().catch(() => undefined);
          throw new Error(`it opened as a ${dev.capabilities().canWrite ? 'writable' : 'read-only'} device of ${dev.size} bytes, not a read-only one of ${this.size}`);
        })
        .catch((err: unknown) => {
          this.#device = undefined;
          throw new BlockError('EIO', `cannot open ${this.name}: ${errorText(err)}`, { cause: err });
        });
      this.#device = opening;
    }
    return this.#device;
  }
}
