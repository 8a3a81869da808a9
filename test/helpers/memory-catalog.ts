/**
 * In-memory publications for front-end tests (FUSE, NFS): MemoryCatalog publishes restore points
 * whose disks are buffers, and sessions over devices the test owns, into a real Catalog. Point
 * disks are opened lazily (`open:`, so publishing costs nothing) and counted: `opens` and `closes`
 * show when the catalog opens a point's device (first opener) and closes it (unpublished and
 * unused). Also: BufferDevice, a read-only device over a buffer with configurable block sizes.
 */
import { BlockError } from '../../src/errors.js';
import type { BlockDevice, Capabilities, Extent } from '../../src/blockdev/types.js';
import { readOnlyCapabilities } from '../../src/blockdev/types.js';
import { Catalog, pointEntryName, sessionEntryName, type CatalogEntry, type CatalogView, type FrontEnd, type PointInfo, type SessionInfo } from '../../src/exports/catalog.js';

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

/** A restore point id (20261122T034000Z) as its time. */
export function pointTime(id: string): Date {
  return new Date(`${id.slice(0, 4)}-${id.slice(4, 6)}-${id.slice(6, 8)}T${id.slice(9, 11)}:${id.slice(11, 13)}:${id.slice(13, 15)}Z`);
}

export interface MemoryPointOptions {
  /** VM configuration files stored with the point: name -> content. */
  configs?: Record<string, string>;
  /** Front ends the disks are published on. Default: NBD, NFS and FUSE. */
  publish?: readonly FrontEnd[];
  /** The point's time. Default: from its id. */
  createdAt?: Date;
}

export interface MemorySessionOptions {
  /** Front ends the disks are published on. Default: NBD, NFS and FUSE. */
  publish?: readonly FrontEnd[];
}

const ALL: readonly FrontEnd[] = ['nbd', 'nfs', 'fuse'];

export class MemoryCatalog {
  readonly catalog: Catalog;
  /** Point devices opened (the catalog opens one per entry on its first opener). */
  opens = 0;
  /** Point devices closed (the catalog closes one when its entry is unpublished and unused). */
  closes = 0;

  constructor(catalog: Catalog = new Catalog()) {
    this.catalog = catalog;
  }

  view(frontEnd: FrontEnd): CatalogView {
    return this.catalog.view(frontEnd);
  }

  /** Publishes restore point VM@ID with buffer disks (entries `VM@ID/DISK`, kind 'point'). */
  addPoint(vm: string, id: string, disks: Record<string, Buffer>, opts: MemoryPointOptions = {}): CatalogEntry[] {
    const configs = opts.configs ?? {};
    const point: PointInfo = {
      vm,
      id,
      createdAt: opts.createdAt ?? pointTime(id),
      configs: Object.keys(configs),
      readConfig: async (name) => {
        const c = configs[name];
        if (c === undefined) throw new Error(`no config file '${name}'`);
        return Buffer.from(c);
      },
    };
    return Object.entries(disks).map(([disk, buf]) =>
      this.catalog.publish({
        name: pointEntryName(vm, id, disk),
        kind: 'point',
        disk,
        size: buf.length,
        capabilities: readOnlyCapabilities(),
        publish: opts.publish ?? ALL,
        source: `memory:${vm}@${id}/${disk}`,
        point,
        open: async () => {
          this.opens++;
          return new BufferDevice(buf, { onClose: () => this.closes++ });
        },
      }),
    );
  }

  /** Unpublishes every disk of VM@ID (readers that have it open keep reading). */
  async removePoint(vm: string, id: string): Promise<void> {
    for (const e of this.catalog.entries()) if (e.point?.vm === vm && e.point.id === id) await this.catalog.unpublish(e.name);
  }

  /**
   * Publishes a session's disks (entries `session/NAME/DISK`, kind 'session') over devices the
   * test keeps owning (the catalog never closes them).
   */
  addSession(info: SessionInfo, disks: Record<string, BlockDevice>, opts: MemorySessionOptions = {}): CatalogEntry[] {
    return Object.entries(disks).map(([disk, device]) =>
      this.catalog.publish({
        name: sessionEntryName(info.name, disk),
        kind: 'session',
        disk,
        size: device.size,
        capabilities: device.capabilities(),
        publish: opts.publish ?? ALL,
        source: `session:${info.name}/${disk}`,
        session: info,
        device,
        owned: false,
      }),
    );
  }

  /** Takes a session's disks away, closing every opener's gate now (a discarded session). */
  async removeSession(name: string): Promise<void> {
    for (const e of this.catalog.entries()) if (e.session?.name === name) await this.catalog.revoke(e.name);
  }

  /** Revokes everything; closes the point devices (not the sessions'). */
  close(): Promise<void> {
    return this.catalog.close();
  }
}
