/**
 * ReadOnlyDevice: the base of every read-only source (raw image, restore point, lazy stand-in,
 * frozen view). The write path is written once, here: write, trim and zero reject with EROFS and
 * never reach anything; flush resolves (nothing was written; clients flush on close even on
 * read-only exports). A subclass implements read, extents and close, and may widen capabilities
 * (extents, block sizes) but never the write path.
 */
import { BlockError } from '../../errors.js';
import type { BlockDevice, Capabilities, Extent, IoOptions } from '../types.js';
import { readOnlyCapabilities } from '../types.js';

export abstract class ReadOnlyDevice implements BlockDevice {
  abstract readonly name: string;
  abstract readonly size: number;
  /** Says what is read-only in EROFS messages, e.g. 'restore points are read-only'. */
  protected readonly readOnlyMessage: string = 'the device is read-only';

  capabilities(): Capabilities {
    return readOnlyCapabilities();
  }

  abstract read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void>;
  abstract extents(offset: number, length: number, opts?: IoOptions): Promise<Extent[]>;
  abstract close(): Promise<void>;

  async write(): Promise<void> {
    throw new BlockError('EROFS', this.readOnlyMessage);
  }

  async flush(): Promise<void> {
    // Nothing is ever written here: nothing to make stable.
  }

  async trim(): Promise<void> {
    throw new BlockError('EROFS', this.readOnlyMessage);
  }

  async zero(): Promise<void> {
    throw new BlockError('EROFS', this.readOnlyMessage);
  }
}
