/**
 * PointExporter: publishes every restore point of the repository as read-only exports named
 *
 *   VM@POINT/DISK     one disk of one restore point (POINT is its id, e.g. 20261122T034000Z)
 *   VM@latest/DISK    the same disk of the VM's newest restore point
 *
 * `sync()` brings the registry in step with the repository after backups and prunes: new points
 * appear, pruned ones disappear, and `latest` moves. Exports are lazy (the index is read on first
 * use) and replaced ones are retired, so a client still connected to an old `latest` keeps reading
 * the point it started with.
 */
import { LazyDevice } from '../blockdev/base/lazy.js';
import { repoImageCapabilities } from '../blockdev/base/repo-image.js';
import type { ExportRegistry } from '../exports/registry.js';
import type { PointManifest } from '../repo/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { Logger } from '../util/log.js';

export function pointExportName(vm: string, point: string, disk: string): string {
  return `${vm}@${point}/${disk}`;
}

export function describePoint(m: PointManifest, disk: string): string {
  const when = m.createdAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  return `${m.vm} ${disk}, ${m.label}-consistent backup of ${when}${m.tags.length ? ` [${m.tags.join(', ')}]` : ''}`;
}

export class PointExporter {
  readonly #repo: Repository;
  readonly #registry: ExportRegistry;
  readonly #log: Logger;
  /** Export names we manage -> the point key (vm@id/disk) they show. */
  readonly #owned = new Map<string, string>();
  #syncing: Promise<void> = Promise.resolve();

  constructor(repo: Repository, registry: ExportRegistry, log: Logger) {
    this.#repo = repo;
    this.#registry = registry;
    this.#log = log;
  }

  /** Brings the exports in step with the repository (serialised; safe to call often). */
  sync(): Promise<void> {
    this.#syncing = this.#syncing.then(() => this.#sync()).catch((err) => this.#log.error('publishing restore points failed', { err }));
    return this.#syncing;
  }

  async #sync(): Promise<void> {
    const wanted = new Map<string, { m: PointManifest; disk: string; key: string }>();
    const byVm = new Map<string, PointManifest[]>();
    for (const m of await this.#repo.points()) byVm.set(m.vm, [...(byVm.get(m.vm) ?? []), m]);
    for (const [vm, points] of byVm) {
      const latest = points[points.length - 1]!;
      for (const m of points) {
        for (const d of m.disks) {
          const key = pointExportName(vm, m.id, d.name);
          wanted.set(key, { m, disk: d.name, key });
          if (m === latest) wanted.set(pointExportName(vm, 'latest', d.name), { m, disk: d.name, key });
        }
      }
    }
    for (const [name, key] of this.#owned) {
      if (wanted.get(name)?.key !== key) {
        this.#owned.delete(name);
        if (this.#registry.has(name)) await this.#registry.retire(name);
      }
    }
    for (const [name, w] of wanted) {
      if (this.#owned.has(name)) continue;
      if (this.#registry.has(name)) continue; // an explicit --export took the name
      const disk = w.m.disks.find((d) => d.name === w.disk)!;
      const device = new LazyDevice('repo-image', disk.size, repoImageCapabilities(disk.chunkSize), () => this.#repo.openImage(w.m, w.disk));
      this.#registry.add({ name, device, description: describePoint(w.m, w.disk), source: `repo:${w.key}` });
      this.#owned.set(name, w.key);
    }
  }
}
