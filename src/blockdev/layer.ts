/**
 * Layer: the base class of every filter in a device stack (cow, qos, stats, freeze, dirty-tracker,
 * fault), and the stack builder.
 *
 * Read-only pass-through (read, extents, capabilities, close) defaults to the next device. The
 * write path (write, flush, trim, zero) is abstract on purpose: a layer that forgets it must not
 * compile, because a silent default could let a write reach a backup image. A device that is not
 * a Layer but sits on another (checked(), the switch) names it `next` too, so `describeStack` and
 * `findLayer` see whole stacks.
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

/**
 * Builds one layer on top of the device below it (which the layer must keep as `next`). May be
 * async: an overlay opens its files.
 */
export type LayerFactory = (next: BlockDevice) => BlockDevice | Promise<BlockDevice>;

/**
 * Stacks layers bottom-up: `await buildStack(base, [cow, qos])` gives qos -> cow -> base.
 *
 * If a factory fails, or makes a device that does not sit on the one below (its `next`), what was
 * built so far is closed, down to the base, before the error propagates: the caller owns nothing
 * of a stack that failed to build.
 */
export async function buildStack(base: BlockDevice, layers: readonly LayerFactory[] = []): Promise<BlockDevice> {
  let top = base;
  for (const make of layers) {
    try {
      const dev = await make(top);
      if ((dev as { next?: BlockDevice }).next !== top) {
        await dev.close().catch(() => undefined);
        throw new TypeError(`layer ${dev.name} does not sit on ${top.name}: a layer keeps the device below as 'next'`);
      }
      top = dev;
    } catch (err) {
      await top.close().catch(() => undefined);
      throw err;
    }
  }
  return top;
}

/** The devices of a stack from the top down to the base, following `next`. */
export function stackOf(top: BlockDevice): BlockDevice[] {
  const out: BlockDevice[] = [];
  for (let dev: BlockDevice | undefined = top; dev; dev = (dev as { next?: BlockDevice }).next) out.push(dev);
  return out;
}

/** Layer names from the top of the stack down to the base, e.g. ['qos', 'cow', 'raw-file']. */
export function describeStack(top: BlockDevice): string[] {
  return stackOf(top).map((dev) => dev.name);
}

/** The topmost device of a class in the stack, e.g. `findLayer(top, StatsLayer)` for its counters. */
export function findLayer<T extends BlockDevice>(top: BlockDevice, kind: { readonly prototype: T }): T | undefined {
  return stackOf(top).find((dev): dev is T => Object.prototype.isPrototypeOf.call(kind.prototype, dev));
}
