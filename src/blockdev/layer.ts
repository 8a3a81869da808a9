/**
 * Layer: the base class of every filter in a device stack (cache, cow, qos, stats, fault).
 *
 * Read-only pass-through (read, extents, capabilities, close) defaults to the next device. The
 * write path (write, flush, trim, zero) is abstract on purpose: a layer that forgets it must not
 * compile, because a silent default could let a write reach a backup image.
 */
import type {
  BlockDevice,
  Capabilities,
  Extent,
  IoOptions,
  WriteOptions,
  ZeroOptions,
} from './types.js';

export abstract class Layer implements BlockDevice {
  abstract readonly name: string;
  readonly next: BlockDevice;

  constructor(next: BlockDevice) {
    this.next = next;
  }

  get size(): number {
    return this.next.size;
  }

  capabilities(): Capabilities {
    return this.next.capabilities();
  }

  read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    return this.next.read(dst, offset, opts);
  }

  extents(offset: number, length: number, opts?: IoOptions): Promise<Extent[]> {
    return this.next.extents(offset, length, opts);
  }

  abstract write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void>;
  abstract flush(opts?: IoOptions): Promise<void>;
  abstract trim(offset: number, length: number, opts?: WriteOptions): Promise<void>;
  abstract zero(offset: number, length: number, opts?: ZeroOptions): Promise<void>;

  close(): Promise<void> {
    return this.next.close();
  }
}

/** Builds one layer on top of the device below it. */
export type LayerFactory = (next: BlockDevice) => BlockDevice;

/** Stacks layers bottom-up: `buildStack(base, [cow, qos])` gives qos -> cow -> base. */
export function buildStack(base: BlockDevice, layers: LayerFactory[] = []): BlockDevice {
  return layers.reduce<BlockDevice>((next, make) => make(next), base);
}

/** Layer names from the top of the stack down to the base, e.g. ['qos', 'cow', 'raw-file']. */
export function describeStack(top: BlockDevice): string[] {
  const names: string[] = [];
  let dev: BlockDevice | undefined = top;
  while (dev) {
    names.push(dev.name);
    dev = (dev as { next?: BlockDevice }).next;
  }
  return names;
}
