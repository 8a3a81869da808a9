/**
 * A front end in about fifty lines, to show that the catalog is all a front end needs: it lists
 * every disk published on it (points grouped by VM, sessions, ad-hoc exports) as paths, and reads
 * any of them through the entry's own gate. Nothing here knows about the repository or recovery.
 */
import type { CatalogEntry, CatalogView } from '../../src/exports/catalog.js';
import { readAt } from '../../src/exports/read-at.js';

export class ListingFrontEnd {
  readonly #view: CatalogView;
  readonly errors: string[] = [];

  constructor(view: CatalogView) {
    this.#view = view;
  }

  /** Path -> entry, e.g. 'vms/web1/20261122T030000Z/disk0', 'vms/web1/latest/disk0', 'sessions/s1/disk0', 'other/scratch'. */
  list(): Map<string, CatalogEntry> {
    const out = new Map<string, CatalogEntry>();
    for (const vm of this.#view.vms()) {
      for (const p of vm.points) for (const d of p.disks) out.set(`vms/${vm.vm}/${p.info.id}/${d.disk}`, d);
      for (const d of vm.points.at(-1)!.disks) out.set(`vms/${vm.vm}/latest/${d.disk}`, d);
    }
    for (const s of this.#view.sessions()) for (const d of s.disks) out.set(`sessions/${s.info.name}/${d.disk}`, d);
    for (const e of this.#view.entries()) if (e.kind === 'adhoc') out.set(`other/${e.name}`, e);
    return out;
  }

  /** Reads `length` bytes at `offset` of the disk at `path` (any alignment). */
  async read(path: string, offset: number, length: number): Promise<Buffer> {
    const entry = this.list().get(path);
    if (!entry) throw new Error(`no such disk: ${path}`);
    const dev = await entry.open({ onUnexpectedError: (err, op) => this.errors.push(`${path} ${op}: ${String(err)}`) });
    try {
      const buf = Buffer.alloc(Math.min(length, entry.size - offset));
      await readAt(dev, buf, offset);
      return buf;
    } finally {
      await dev.close();
    }
  }

  /** Every published disk, whole. */
  async readAll(): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    for (const [path, e] of this.list()) out.set(path, await this.read(path, 0, e.size));
    return out;
  }
}
