/**
 * Catalog: a `level` database (DATA/catalog) indexing the repository's restore points for fast
 * listing: key `point!<vm>!<id>` -> the point's manifest. It is only an index: the manifests under
 * repo/vms are the source of truth and `rebuild()` (rebound repo reindex) recreates it from them.
 */
import { Level } from 'level';
import type { PointManifest } from './manifest.js';

export class Catalog {
  readonly #db: Level<string, PointManifest>;

  private constructor(db: Level<string, PointManifest>) {
    this.#db = db;
  }

  static async open(dir: string): Promise<Catalog> {
    const db = new Level<string, PointManifest>(dir, { valueEncoding: 'json' });
    await db.open();
    return new Catalog(db);
  }

  async put(m: PointManifest): Promise<void> {
    await this.#db.put(key(m.vm, m.id), m);
  }

  async delete(vm: string, id: string): Promise<void> {
    await this.#db.del(key(vm, id));
  }

  /** Points of one VM (or of all VMs), oldest first. */
  async points(vm?: string): Promise<PointManifest[]> {
    const prefix = vm === undefined ? 'point!' : `point!${vm}!`;
    const out: PointManifest[] = [];
    for await (const value of this.#db.values({ gte: prefix, lt: prefix + '\xff' })) out.push(value);
    return out;
  }

  async isEmpty(): Promise<boolean> {
    for await (const _ of this.#db.keys({ limit: 1 })) return false;
    return true;
  }

  /** Replaces one VM's points with `manifests` (points another gateway added to a shared bucket). */
  async replaceVm(vm: string, manifests: PointManifest[]): Promise<void> {
    const prefix = `point!${vm}!`;
    const ops: Array<{ type: 'del'; key: string } | { type: 'put'; key: string; value: PointManifest }> = [];
    for await (const k of this.#db.keys({ gte: prefix, lt: prefix + '\xff' })) ops.push({ type: 'del', key: k });
    for (const m of manifests) ops.push({ type: 'put', key: key(m.vm, m.id), value: m });
    await this.#db.batch(ops);
  }

  /** Replaces the whole catalog with `manifests`. */
  async rebuild(manifests: PointManifest[]): Promise<void> {
    await this.#db.clear();
    await this.#db.batch(manifests.map((m) => ({ type: 'put' as const, key: key(m.vm, m.id), value: m })));
  }

  async close(): Promise<void> {
    await this.#db.close();
  }
}

function key(vm: string, id: string): string {
  return `point!${vm}!${id}`;
}
