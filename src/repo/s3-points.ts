/**
 * S3Points: restore points in the bucket, under `PREFIX/vms/<vm>/<id>/` — `point.json`, the
 * `<disk>.fidx` indexes and `config/<file>`, the same names as in a local repository.
 *
 * Design notes:
 *  - Commit, with several gateways writing: first the point id is claimed with a conditional
 *    create of `vms/<vm>/<id>/.claim` (If-None-Match: *); if another gateway has it, the next id
 *    (`-2`, `-3`, ...) is tried. Then the indexes and config files are uploaded, and `point.json`
 *    last: a point is complete exactly when its manifest exists, so a backup that fails half-way
 *    (endpoint lost) leaves no point, only a claim and some index objects that gc removes.
 *  - Delete removes `point.json` first (the point stops existing), then the rest.
 *  - In an encrypted repository every object here except the id claim (gateway id and time) is
 *    sealed (repo-crypto.ts, MetadataSealer) and bound to its key: a manifest, index or config
 *    file copied to another point's name does not open there.
 *  - listManifests() lists `vms/` and reads every manifest: the local catalog is rebuilt from it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { PointBackend } from './backend.js';
import { builtPointFiles, parseManifest, type PointManifest } from './manifest.js';
import { MetadataSealer } from './repo-crypto.js';
import type { S3Objects } from './s3-objects.js';

/** Manifests read at once when listing. */
const LIST_CONCURRENCY = 8;

export function pointPrefix(vm: string, id: string): string {
  return `vms/${vm}/${id}/`;
}

export class S3Points implements PointBackend {
  readonly #objects: S3Objects;
  readonly #gateway: string;
  readonly #sealer: MetadataSealer;

  constructor(objects: S3Objects, gateway: string, sealer = new MetadataSealer(undefined)) {
    this.#objects = objects;
    this.#gateway = gateway;
    this.#sealer = sealer;
  }

  locationOf(vm: string, id: string): string {
    return this.#objects.url(pointPrefix(vm, id));
  }

  async readFile(vm: string, id: string, name: string): Promise<Buffer> {
    const key = pointPrefix(vm, id) + name;
    const body = await this.#objects.get(key);
    if (!body) throw Object.assign(new Error(`${this.locationOf(vm, id)}${name} does not exist`), { code: 'ENOENT' });
    return this.#sealer.open(key, body, this.#objects.url(key));
  }

  async exists(vm: string, id: string): Promise<boolean> {
    return (await this.#objects.head(pointPrefix(vm, id) + 'point.json')) !== undefined;
  }

  async commit(tmp: string, m: PointManifest): Promise<PointManifest> {
    const base = m.id;
    let id = base;
    const claim = JSON.stringify({ gateway: this.#gateway, at: new Date().toISOString() });
    for (let n = 2; !(await this.#objects.put(pointPrefix(m.vm, id) + '.claim', claim, { ifAbsent: true })); n++) id = `${base}-${n}`;
    const committed = { ...m, id };
    for (const file of builtPointFiles(tmp)) {
      const key = pointPrefix(m.vm, id) + file;
      await this.#objects.put(key, this.#sealer.seal(key, await fs.promises.readFile(path.join(tmp, file))));
    }
    const manifestKey = pointPrefix(m.vm, id) + 'point.json';
    await this.#objects.put(manifestKey, this.#sealer.seal(manifestKey, JSON.stringify(committed, null, 2) + '\n'));
    return committed;
  }

  async delete(vm: string, id: string): Promise<boolean> {
    const prefix = pointPrefix(vm, id);
    const existed = await this.exists(vm, id);
    if (existed) await this.#objects.delete(prefix + 'point.json');
    for await (const o of this.#objects.list(prefix)) await this.#objects.delete(o.key);
    return existed;
  }

  async listManifests(vm?: string): Promise<PointManifest[]> {
    const keys: string[] = [];
    for await (const o of this.#objects.list(vm === undefined ? 'vms/' : `vms/${vm}/`)) {
      if (/^vms\/[^/]+\/[^/]+\/point\.json$/.test(o.key)) keys.push(o.key);
    }
    const out: PointManifest[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < keys.length) {
        const key = keys[next++]!;
        const body = await this.#objects.get(key);
        if (body) out.push(parseManifest(this.#sealer.open(key, body, this.#objects.url(key)).toString('utf8'), this.#objects.url(key))); // else deleted meanwhile
      }
    };
    await Promise.all(Array.from({ length: LIST_CONCURRENCY }, worker));
    return out;
  }
}

