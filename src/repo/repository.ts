/**
 * Repository: the backup repository under DATA/repo plus its catalog (DATA/catalog). Owns the
 * ChunkStore and the shared ChunkCache, lists and resolves restore points, opens RepoImages of
 * their disks, and keeps track of what is in use (open images, pinned points) so that prune and gc
 * never take data away from a running export or recovery session.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ChunkCache } from '../blockdev/base/chunk-cache.js';
import { RepoImage } from '../blockdev/base/repo-image.js';
import { ReboundError } from '../errors.js';
import { Catalog } from './catalog.js';
import { ChunkStore } from './chunk-store.js';
import { codecByName, ZSTD, type Codec } from './codec.js';
import { checkName, FixedIndex, REPO_FORMAT, REPO_VERSION } from './format.js';
import { parseManifest, type PointManifest } from './manifest.js';
import { fsyncDir, writeFileDurable } from '../util/durable-file.js';

export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

export interface RepoConfig {
  format: typeof REPO_FORMAT;
  version: number;
  chunkSize: number;
  codec: string;
  createdAt: string;
}

export interface RepositoryOptions {
  /** Chunk size of a new repository, bytes. */
  chunkSize?: number;
  /** Codec for new chunks. */
  codec?: Codec;
  /** Size of the shared cache of uncompressed chunks, bytes. */
  cacheBytes?: number;
}

export class Repository {
  readonly dir: string;
  readonly config: RepoConfig;
  readonly store: ChunkStore;
  readonly cache: ChunkCache;
  readonly catalog: Catalog;
  /** Indexes of open images (by key vm/point/disk) with a use count: gc keeps their chunks. */
  readonly #openIndexes = new Map<string, { index: FixedIndex; users: number }>();
  /** Points pinned by recovery sessions: prune keeps them. */
  readonly #pins = new Map<string, number>();

  private constructor(dir: string, config: RepoConfig, store: ChunkStore, cache: ChunkCache, catalog: Catalog) {
    this.dir = dir;
    this.config = config;
    this.store = store;
    this.cache = cache;
    this.catalog = catalog;
  }

  /** Opens DATA/repo (creating it) and DATA/catalog (rebuilding it if empty). */
  static async open(dataDir: string, opts: RepositoryOptions = {}): Promise<Repository> {
    const dir = path.join(dataDir, 'repo');
    const cfgFile = path.join(dir, 'repo.json');
    let config: RepoConfig;
    if (fs.existsSync(cfgFile)) {
      config = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as RepoConfig;
      if (config.format !== REPO_FORMAT) throw new ReboundError('ERR_REPO_CORRUPT', `${cfgFile} is not a rebound repository`);
      if (config.version !== REPO_VERSION) {
        throw new ReboundError('ERR_REPO_CORRUPT', `${dir} has repository format ${config.version}; this rebound reads ${REPO_VERSION}`);
      }
    } else {
      const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
      if (chunkSize < 4096 || chunkSize > 16 * 1024 * 1024 || (chunkSize & (chunkSize - 1)) !== 0) {
        throw new ReboundError('ERR_INVALID_ARGUMENT', `invalid chunk size ${chunkSize}: a power of two from 4K to 16M`);
      }
      config = { format: REPO_FORMAT, version: REPO_VERSION, chunkSize, codec: (opts.codec ?? ZSTD).name, createdAt: new Date().toISOString() };
      for (const sub of ['chunks', 'vms', 'tmp']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
      writeFileDurable(cfgFile, JSON.stringify(config, null, 2) + '\n');
    }
    const store = new ChunkStore(path.join(dir, 'chunks'), opts.codec ?? codecByName(config.codec), { tmpDir: path.join(dir, 'tmp') });
    const cache = new ChunkCache(store, opts.cacheBytes ?? 256 * 1024 * 1024);
    const catalog = await Catalog.open(path.join(dataDir, 'catalog'));
    const repo = new Repository(dir, config, store, cache, catalog);
    // Leftovers of interrupted backups are garbage: their stored chunks go at the next gc, their
    // half-written ones (tmp/chunk-*, see ChunkStore) and unfinished points now.
    fs.rmSync(path.join(dir, 'tmp'), { recursive: true, force: true });
    fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
    if (await catalog.isEmpty()) await repo.reindex();
    return repo;
  }

  get chunkSize(): number {
    return this.config.chunkSize;
  }

  pointDir(vm: string, id: string): string {
    return path.join(this.dir, 'vms', vm, id);
  }

  /** A fresh directory for a backup in progress. */
  tempDir(): string {
    const d = path.join(this.dir, 'tmp', crypto.randomBytes(8).toString('hex'));
    fs.mkdirSync(d, { recursive: true });
    return d;
  }

  async points(vm?: string): Promise<PointManifest[]> {
    return this.catalog.points(vm);
  }

  async vms(): Promise<Array<{ vm: string; points: number; latest: string }>> {
    const by = new Map<string, PointManifest[]>();
    for (const p of await this.points()) by.set(p.vm, [...(by.get(p.vm) ?? []), p]);
    return [...by.entries()].map(([vm, ps]) => ({ vm, points: ps.length, latest: ps[ps.length - 1]!.id }));
  }

  /** Resolves `VM@POINT` parts: POINT is an id, 'latest', or omitted (latest). */
  async point(vm: string, spec = 'latest'): Promise<PointManifest> {
    checkName('VM', vm);
    const ps = await this.points(vm);
    if (ps.length === 0) throw new ReboundError('ERR_VM_NOT_FOUND', `no backups of VM '${vm}'`);
    if (spec === 'latest') return ps[ps.length - 1]!;
    const p = ps.find((x) => x.id === spec);
    if (!p) throw new ReboundError('ERR_POINT_NOT_FOUND', `VM '${vm}' has no restore point '${spec}' (latest is ${ps[ps.length - 1]!.id})`);
    return p;
  }

  async readIndex(m: PointManifest, disk: string): Promise<FixedIndex> {
    const d = m.disks.find((x) => x.name === disk);
    if (!d) {
      throw new ReboundError('ERR_DISK_NOT_FOUND', `restore point ${m.vm}@${m.id} has no disk '${disk}' (disks: ${m.disks.map((x) => x.name).join(', ')})`);
    }
    const file = path.join(this.pointDir(m.vm, m.id), d.index);
    return FixedIndex.decode(await fs.promises.readFile(file), file);
  }

  /** Opens a read-only image of one disk of a point, through the shared cache. */
  async openImage(m: PointManifest, disk: string): Promise<RepoImage> {
    const key = `${m.vm}/${m.id}/${disk}`;
    let entry = this.#openIndexes.get(key);
    if (!entry) {
      entry = { index: await this.readIndex(m, disk), users: 0 };
      this.#openIndexes.set(key, entry);
    }
    entry.users++;
    const e = entry;
    return new RepoImage(e.index, this.cache, {
      onClose: () => {
        if (--e.users === 0) this.#openIndexes.delete(key);
      },
    });
  }

  /** Indexes in use by open images (gc marks them even if their point was pruned). */
  openIndexes(): FixedIndex[] {
    return [...this.#openIndexes.values()].map((e) => e.index);
  }

  pin(vm: string, id: string): () => void {
    const key = `${vm}@${id}`;
    this.#pins.set(key, (this.#pins.get(key) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.#pins.get(key) ?? 1) - 1;
      if (n > 0) this.#pins.set(key, n);
      else this.#pins.delete(key);
    };
  }

  isPinned(vm: string, id: string): boolean {
    return this.#pins.has(`${vm}@${id}`);
  }

  /** Commits a completed backup directory as restore point `m` (see format.ts crash rules). */
  async commitPoint(tmp: string, m: PointManifest): Promise<void> {
    writeFileDurable(path.join(tmp, 'point.json'), JSON.stringify(m, null, 2) + '\n');
    fsyncDir(tmp);
    const vmDir = path.join(this.dir, 'vms', m.vm);
    fs.mkdirSync(vmDir, { recursive: true });
    fs.renameSync(tmp, path.join(vmDir, m.id));
    fsyncDir(vmDir);
    await this.catalog.put(m);
  }

  /** Deletes a restore point (its chunks stay until gc). Refuses a pinned point. */
  async deletePoint(vm: string, id: string): Promise<void> {
    if (this.isPinned(vm, id)) throw new ReboundError('ERR_INVALID_ARGUMENT', `restore point ${vm}@${id} is in use by a recovery session`);
    const d = this.pointDir(vm, id);
    if (!fs.existsSync(d)) {
      await this.catalog.delete(vm, id);
      throw new ReboundError('ERR_POINT_NOT_FOUND', `restore point ${vm}@${id} is already gone from the repository`);
    }
    // Rename first so a crash never leaves a half-deleted point that still looks complete.
    const trash = path.join(this.dir, 'tmp', `deleted-${vm}-${id}-${crypto.randomBytes(4).toString('hex')}`);
    fs.renameSync(d, trash);
    await this.catalog.delete(vm, id);
    fs.rmSync(trash, { recursive: true, force: true });
  }

  /** Rebuilds the catalog from the manifests on disk; returns the number of points found. */
  async reindex(): Promise<number> {
    const manifests: PointManifest[] = [];
    const vmsDir = path.join(this.dir, 'vms');
    for (const vm of fs.existsSync(vmsDir) ? fs.readdirSync(vmsDir) : []) {
      for (const id of fs.readdirSync(path.join(vmsDir, vm))) {
        const file = path.join(vmsDir, vm, id, 'point.json');
        if (fs.existsSync(file)) manifests.push(parseManifest(fs.readFileSync(file, 'utf8'), file));
      }
    }
    manifests.sort((a, b) => (a.vm === b.vm ? a.id.localeCompare(b.id) : a.vm.localeCompare(b.vm)));
    await this.catalog.rebuild(manifests);
    return manifests.length;
  }

  async close(): Promise<void> {
    await this.catalog.close();
  }
}
