/**
 * PointPublisher: keeps the catalog in step with the repository's restore points. Every disk of
 * every point is one catalog entry `VM@POINT/DISK` (read-only; opened on first use through the
 * shared chunk cache); the catalog itself resolves `VM@latest/DISK` to the newest point. Points
 * are published on NFS and FUSE always, on NBD when `exportPoints` is on.
 *
 * `sync()` runs after backups, prunes and deletes: new points appear, removed ones are unpublished
 * (a client still reading a removed point keeps its handle until it leaves).
 */
import { repoImageCapabilities } from '../blockdev/base/repo-image.js';
import { ReboundError } from '../errors.js';
import { pointEntryName, type Catalog, type FrontEnd, type PointInfo } from '../exports/catalog.js';
import type { PointManifest } from '../repo/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { Logger } from '../util/log.js';

export function describePoint(m: PointManifest, disk: string): string {
  const when = m.createdAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  return `${m.vm} ${disk}, ${m.label}-consistent backup of ${when}${m.tags.length ? ` [${m.tags.join(', ')}]` : ''}`;
}

/** What the catalog keeps of a point: its facts and how to read its config files. */
export function pointInfo(repo: Repository, m: PointManifest): PointInfo {
  return {
    vm: m.vm,
    id: m.id,
    createdAt: new Date(m.createdAt),
    configs: m.configs,
    async readConfig(name: string): Promise<Buffer> {
      if (!m.configs.includes(name)) throw new ReboundError('ERR_CONFIG_FILE_NOT_FOUND', `restore point ${m.vm}@${m.id} has no config file '${name}'`);
      return repo.readConfigFile(m, name);
    },
  };
}

export interface PointPublisherOptions {
  repo: Repository;
  catalog: Catalog;
  log: Logger;
  /** Publish points on NBD too (config `exportPoints`). */
  onNbd: boolean;
}

export class PointPublisher {
  readonly #opts: PointPublisherOptions;
  /** Entry names this publisher owns. */
  readonly #owned = new Set<string>();
  #syncing: Promise<void> = Promise.resolve();

  constructor(opts: PointPublisherOptions) {
    this.#opts = opts;
  }

  /** Brings the catalog in step with the repository (serialised; safe to call often). */
  sync(): Promise<void> {
    this.#syncing = this.#syncing.then(() => this.#sync()).catch((err: unknown) => this.#opts.log.error('publishing restore points failed', { err }));
    return this.#syncing;
  }

  async #sync(): Promise<void> {
    const { repo, catalog, log } = this.#opts;
    const points = await repo.points();
    const wanted = new Set(points.flatMap((m) => m.disks.map((d) => pointEntryName(m.vm, m.id, d.name))));
    for (const name of this.#owned) {
      if (wanted.has(name)) continue;
      this.#owned.delete(name);
      if (catalog.has(name)) await catalog.unpublish(name);
    }
    const publish: FrontEnd[] = this.#opts.onNbd ? ['nbd', 'nfs', 'fuse', 'iscsi'] : ['nfs', 'fuse', 'iscsi'];
    for (const m of points) {
      let info: PointInfo | undefined; // made once per point, only when one of its disks is new
      for (const d of m.disks) {
        const name = pointEntryName(m.vm, m.id, d.name);
        if (this.#owned.has(name)) continue;
        info ??= pointInfo(repo, m);
        if (catalog.has(name)) {
          log.warn('an export of that name exists already; the restore point is not published under it', { export: name });
          continue;
        }
        catalog.publish({
          name,
          kind: 'point',
          disk: d.name,
          size: d.size,
          capabilities: repoImageCapabilities(d),
          publish,
          description: describePoint(m, d.name),
          source: `repo:${name}`,
          point: info,
          open: () => repo.openImage(m, d.name),
        });
        this.#owned.add(name);
      }
    }
  }
}
