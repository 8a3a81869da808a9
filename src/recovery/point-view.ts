/**
 * RepoPointSource: the repository's restore points as PointViews for the file front ends (FUSE,
 * NFS). Listing reads the catalog (cheap); disks open lazily through the shared chunk cache.
 * `notify()` is called by the daemon after anything that changes the set of points.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BlockDevice } from '../blockdev/types.js';
import { ReboundError } from '../errors.js';
import type { PointSource, PointView } from '../exports/views.js';
import type { PointManifest } from '../repo/manifest.js';
import type { Repository } from '../repo/repository.js';

export class RepoPointSource implements PointSource {
  readonly #repo: Repository;
  readonly #listeners = new Set<() => void>();

  constructor(repo: Repository) {
    this.#repo = repo;
  }

  async list(): Promise<PointView[]> {
    return (await this.#repo.points()).map((m) => this.#view(m));
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  notify(): void {
    for (const l of this.#listeners) l();
  }

  #view(m: PointManifest): PointView {
    const repo = this.#repo;
    return {
      vm: m.vm,
      id: m.id,
      createdAt: new Date(m.createdAt),
      disks: m.disks.map((d) => ({
        name: d.name,
        size: d.size,
        open: (): Promise<BlockDevice> => repo.openImage(m, d.name),
      })),
      configs: m.configs,
      async readConfig(name: string): Promise<Buffer> {
        if (!m.configs.includes(name)) {
          throw new ReboundError('ERR_CONFIG_FILE_NOT_FOUND', `restore point ${m.vm}@${m.id} has no config file '${name}'`);
        }
        return fs.promises.readFile(path.join(repo.pointDir(m.vm, m.id), 'config', name));
      },
    };
  }
}
