/**
 * In-memory views for FUSE tests: a PointSource whose disks are buffers (counting opens and
 * closes, so tests see that released files close their devices), and read-only buffer devices.
 */
import { BlockError } from '../../src/errors.js';
import type { BlockDevice, Capabilities, Extent } from '../../src/blockdev/types.js';
import { readOnlyCapabilities } from '../../src/blockdev/types.js';
import type { PointSource, PointView } from '../../src/exports/views.js';

export class BufferDevice implements BlockDevice {
  readonly name = 'buffer';
  readonly size: number;
  readonly #buf: Buffer;
  readonly #caps: Capabilities;
  #onClose: () => void;
  closed = false;

  constructor(buf: Buffer, opts: { caps?: Partial<Capabilities>; onClose?: () => void } = {}) {
    this.#buf = buf;
    this.size = buf.length;
    this.#caps = readOnlyCapabilities(opts.caps);
    this.#onClose = opts.onClose ?? (() => undefined);
  }
  capabilities(): Capabilities {
    return this.#caps;
  }
  async read(dst: Uint8Array, offset: number): Promise<void> {
    if (this.closed) throw new BlockError('ESHUTDOWN', 'closed');
    const min = this.#caps.blockSize.min;
    if (offset % min !== 0 || (dst.length % min !== 0 && offset + dst.length !== this.size)) throw new BlockError('EINVAL', `unaligned read ${offset}+${dst.length}`);
    if (dst.length > this.#caps.blockSize.max) throw new BlockError('EOVERFLOW', 'too large');
    if (offset + dst.length > this.size) throw new BlockError('EINVAL', 'past the end');
    dst.set(this.#buf.subarray(offset, offset + dst.length));
  }
  async write(): Promise<void> {
    throw new BlockError('EROFS', 'read-only');
  }
  async flush(): Promise<void> {}
  async trim(): Promise<void> {
    throw new BlockError('EROFS', 'read-only');
  }
  async zero(): Promise<void> {
    throw new BlockError('EROFS', 'read-only');
  }
  async extents(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length, hole: false, zero: false }];
  }
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.#onClose();
    }
  }
}

export class MemoryPointSource implements PointSource {
  readonly points: PointView[] = [];
  readonly #listeners = new Set<() => void>();
  opens = 0;
  closes = 0;
  lists = 0;

  add(vm: string, id: string, disks: Record<string, Buffer>, configs: Record<string, string> = {}): PointView {
    const createdAt = new Date(`${id.slice(0, 4)}-${id.slice(4, 6)}-${id.slice(6, 8)}T${id.slice(9, 11)}:${id.slice(11, 13)}:${id.slice(13, 15)}Z`);
    const view: PointView = {
      vm,
      id,
      createdAt,
      disks: Object.entries(disks).map(([name, buf]) => ({
        name,
        size: buf.length,
        open: async () => {
          this.opens++;
          return new BufferDevice(buf, { onClose: () => this.closes++ });
        },
      })),
      configs: Object.keys(configs),
      readConfig: async (name) => Buffer.from(configs[name]!),
    };
    this.points.push(view);
    this.notify();
    return view;
  }

  remove(vm: string, id: string): void {
    const i = this.points.findIndex((p) => p.vm === vm && p.id === id);
    if (i >= 0) this.points.splice(i, 1);
    this.notify();
  }

  async list(): Promise<PointView[]> {
    this.lists++;
    return [...this.points];
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  notify(): void {
    for (const l of this.#listeners) l();
  }
}
