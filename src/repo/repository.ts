/**
 * Repository: the backup repository plus its catalog (DATA/catalog). The repository lives in
 * DATA/repo (a local directory: chunk-store.ts + local-points.ts) or in an S3 bucket that
 * DATA/repo/s3.json links to (s3-chunk-store.ts + s3-points.ts, a disk chunk cache in
 * DATA/cache/chunks); everything above goes through the two backend interfaces (backend.ts).
 * Owns the shared ChunkCache, lists and resolves restore points, opens RepoImages of their disks,
 * and keeps track of what is in use (open images, pinned points) so that prune and gc never take
 * data away from a running export or recovery session of this gateway.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ChunkCache } from '../blockdev/base/chunk-cache.js';
import { RepoImage } from '../blockdev/base/repo-image.js';
import { ReboundError } from '../errors.js';
import type { ChunkBackend, PointBackend } from './backend.js';
import { Catalog } from './catalog.js';
import { ChunkStore } from './chunk-store.js';
import { codecByName, ZSTD, type Codec } from './codec.js';
import { DiskChunkCache, type DiskCacheStats } from './disk-cache.js';
import { checkName, FixedIndex, REPO_FORMAT, REPO_VERSION } from './format.js';
import { LocalPoints } from './local-points.js';
import type { PointManifest } from './manifest.js';
import { S3ChunkStore } from './s3-chunk-store.js';
import { readLink, type S3Link } from './s3-link.js';
import { DEFAULT_LEASE_TIMING, registerBackup, type LeaseTiming } from './s3-lease.js';
import { S3Objects, type S3Counters } from './s3-objects.js';
import { pointPrefix, S3Points } from './s3-points.js';
import { AccessRecorder, accessMapName, decodeAccessMap, prefetch } from './access-map.js';
import { writeFileDurable } from '../util/durable-file.js';
import { MetadataSealer, newEncryptionDescriptor, openKeys, readKeyFile, type EncryptionDescriptor, type RepoKeys } from './repo-crypto.js';

export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

export interface RepoConfig {
  format: typeof REPO_FORMAT;
  version: number;
  chunkSize: number;
  codec: string;
  createdAt: string;
  /** Set for an encrypted repository (repo-crypto.ts): algorithms, HKDF salt, key fingerprint. */
  encryption?: EncryptionDescriptor;
  /**
   * A local encrypted repository only: the key file `repo init --encrypt` was given (absolute), the
   * default when no repoKeyFile is set. Never in a bucket's descriptor (s3.json has it there).
   */
  keyFile?: string;
}

export interface RepositoryOptions {
  /** Chunk size of a new repository, bytes. */
  chunkSize?: number;
  /** Codec for new chunks. */
  codec?: Codec;
  /** Size of the shared cache of uncompressed chunks, bytes. */
  cacheBytes?: number;
  /** S3 repositories: size of the disk chunk cache (DATA/cache/chunks), bytes; 0 turns it off. */
  diskCacheBytes?: number;
  /** S3 repositories: how long one object operation retries before failing, ms. */
  s3RetryMs?: number;
  /** S3 repositories: lease and backup-marker timing (tests shorten it). */
  leaseTiming?: LeaseTiming;
  /**
   * The key file of an encrypted repository (config repoKeyFile); default: the one `repo init
   * --encrypt` recorded (DATA/repo/s3.json, or a local repo.json). Refused (ERR_REPO_KEY) for a
   * repository that is not encrypted, and if its fingerprint is not the repository's. A new local
   * repository (none in DATA/repo yet) is created encrypted with it.
   */
  keyFile?: string;
  /** S3 repositories: called when an object operation starts retrying or gives up. */
  onS3Retry?: (what: string, err: unknown, attempt: number) => void;
}

export const DEFAULT_DISK_CACHE_BYTES = 10 * 1024 ** 3;
/** How long closing waits for the access maps of still open images to be written, ms. */
const CLOSE_FLUSH_MS = 5000;
/** Readahead of a sequential reader of an S3 repository's image, chunks (each is a request). */
export const S3_READAHEAD_CHUNKS = 16;

interface OpenIndex {
  index: FixedIndex;
  users: number;
  recorder?: AccessRecorder;
  prefetching?: AbortController;
}
export const DEFAULT_S3_RETRY_MS = 120_000;

/** The S3 side of a repository: link, object access, leases. */
export interface S3Parts {
  link: S3Link;
  objects: S3Objects;
  leaseTiming: LeaseTiming;
  diskCache: DiskChunkCache | undefined;
  store: S3ChunkStore;
  /** Seals the metadata objects (identity unless encrypted). */
  sealer: MetadataSealer;
}

export class Repository {
  /** DATA/repo: the repository itself (local), or the S3 link and the temp directory (S3). */
  readonly dir: string;
  readonly config: RepoConfig;
  readonly store: ChunkBackend;
  readonly pointStore: PointBackend;
  readonly cache: ChunkCache;
  readonly catalog: Catalog;
  /** Set for a repository in a bucket. */
  readonly s3: S3Parts | undefined;
  /**
   * Indexes of open images (by key vm/point/disk) with a use count: gc keeps their chunks. In an
   * S3 repository each also records its access map and may be prefetching the last one.
   */
  readonly #openIndexes = new Map<string, OpenIndex>();
  /** Points pinned by recovery sessions: prune keeps them. */
  readonly #pins = new Map<string, number>();
  /** S3: points whose access maps are being prefetched (pin()), by `vm@id`. */
  readonly #warming = new Map<string, AbortController>();

  private constructor(dir: string, config: RepoConfig, store: ChunkBackend, pointStore: PointBackend, cache: ChunkCache, catalog: Catalog, s3: S3Parts | undefined) {
    this.dir = dir;
    this.config = config;
    this.store = store;
    this.pointStore = pointStore;
    this.cache = cache;
    this.catalog = catalog;
    this.s3 = s3;
  }

  /** Opens DATA/repo (creating a local one unless DATA/repo/s3.json links a bucket) and DATA/catalog (rebuilding it if empty). */
  static async open(dataDir: string, opts: RepositoryOptions = {}): Promise<Repository> {
    const dir = path.join(dataDir, 'repo');
    const link = readLink(dataDir);
    let repo: Repository;
    if (link) {
      repo = await Repository.#openS3(dataDir, link, opts);
    } else {
      const cfgFile = path.join(dir, 'repo.json');
      let config: RepoConfig;
      if (fs.existsSync(cfgFile)) {
        config = checkRepoConfig(JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as RepoConfig, dir);
      } else {
        // A new local repository is encrypted when a key file is given (config repoKeyFile).
        config = createLocalRepository(dir, { ...opts, keyFile: opts.keyFile, recordKeyFile: false });
      }
      const keys = repositoryKeys(config, opts.keyFile ?? config.keyFile, dir);
      const store = new ChunkStore(path.join(dir, 'chunks'), opts.codec ?? codecByName(config.codec), { tmpDir: path.join(dir, 'tmp'), keys });
      const cache = new ChunkCache(store, opts.cacheBytes ?? 256 * 1024 * 1024);
      const catalog = await Catalog.open(path.join(dataDir, 'catalog'));
      repo = new Repository(dir, config, store, new LocalPoints(dir, new MetadataSealer(keys)), cache, catalog, undefined);
    }
    // Leftovers of interrupted backups are garbage: their stored chunks go at the next gc, their
    // half-written ones (tmp/chunk-*, see ChunkStore) and unfinished points now.
    fs.rmSync(path.join(dir, 'tmp'), { recursive: true, force: true });
    fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
    if (await repo.catalog.isEmpty()) await repo.reindex();
    return repo;
  }

  static async #openS3(dataDir: string, link: S3Link, opts: RepositoryOptions): Promise<Repository> {
    const dir = path.join(dataDir, 'repo');
    const objects = new S3Objects(link, { retryMs: opts.s3RetryMs ?? DEFAULT_S3_RETRY_MS, onRetry: opts.onS3Retry });
    try {
      const config = await readRemoteConfig(objects);
      const keys = repositoryKeys(config, opts.keyFile ?? link.keyFile, objects.url(''));
      const diskBytes = opts.diskCacheBytes ?? DEFAULT_DISK_CACHE_BYTES;
      const diskCache = diskBytes > 0 ? await DiskChunkCache.open(path.join(dataDir, 'cache', 'chunks'), diskBytes, keys) : undefined;
      const store = new S3ChunkStore(objects, opts.codec ?? codecByName(config.codec), diskCache, keys);
      const sealer = new MetadataSealer(keys);
      const cache = new ChunkCache({ readChunk: (d) => store.readCached(d) }, opts.cacheBytes ?? 256 * 1024 * 1024);
      const catalog = await Catalog.open(path.join(dataDir, 'catalog'));
      const s3: S3Parts = { link, objects, leaseTiming: opts.leaseTiming ?? DEFAULT_LEASE_TIMING, diskCache, store, sealer };
      return new Repository(dir, config, store, new S3Points(objects, link.gateway, sealer), cache, catalog, s3);
    } catch (err) {
      objects.close();
      throw err;
    }
  }

  get chunkSize(): number {
    return this.config.chunkSize;
  }

  get backend(): 'local' | 's3' {
    return this.s3 ? 's3' : 'local';
  }

  /** The text of a local point's manifest file as read from disk (gc; opened if encrypted). */
  readLocalManifest(vm: string, id: string, body: Buffer): string {
    return this.pointStore instanceof LocalPoints ? this.pointStore.readManifestFile(vm, id, body) : body.toString('utf8');
  }

  /** A local repository's point directory (local repositories only: tests, tools). */
  pointDir(vm: string, id: string): string {
    return path.join(this.dir, 'vms', vm, id);
  }

  /** Where a point lives: its directory or its s3:// prefix. */
  pointLocation(vm: string, id: string): string {
    return this.pointStore.locationOf(vm, id);
  }

  /** A fresh local directory for a backup in progress. */
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

  /**
   * Resolves `VM@POINT` parts: POINT is an id, 'latest', or omitted (latest). In a shared bucket
   * another gateway may have added points: a VM or point this catalog does not know is looked up
   * in the bucket before the answer is "not found".
   */
  async point(vm: string, spec = 'latest'): Promise<PointManifest> {
    checkName('VM', vm);
    let ps = await this.points(vm);
    if (this.s3 && (ps.length === 0 || (spec !== 'latest' && !ps.some((x) => x.id === spec)))) ps = await this.refreshVm(vm);
    if (ps.length === 0) throw new ReboundError('ERR_VM_NOT_FOUND', `no backups of VM '${vm}'`);
    if (spec === 'latest') return ps[ps.length - 1]!;
    const p = ps.find((x) => x.id === spec);
    if (!p) throw new ReboundError('ERR_POINT_NOT_FOUND', `VM '${vm}' has no restore point '${spec}' (latest is ${ps[ps.length - 1]!.id})`);
    return p;
  }

  /** Re-reads one VM's points from the repository into the catalog. */
  async refreshVm(vm: string): Promise<PointManifest[]> {
    const manifests = sortManifests((await this.pointStore.listManifests(vm)).filter((m) => m.vm === vm));
    await this.catalog.replaceVm(vm, manifests);
    return manifests;
  }

  async readIndex(m: PointManifest, disk: string): Promise<FixedIndex> {
    const d = m.disks.find((x) => x.name === disk);
    if (!d) {
      throw new ReboundError('ERR_DISK_NOT_FOUND', `restore point ${m.vm}@${m.id} has no disk '${disk}' (disks: ${m.disks.map((x) => x.name).join(', ')})`);
    }
    const where = this.backend === 'local' ? path.join(this.pointDir(m.vm, m.id), d.index) : `${this.pointLocation(m.vm, m.id)}${d.index}`;
    return FixedIndex.decode(await this.pointStore.readFile(m.vm, m.id, d.index), where);
  }

  /** A VM configuration file stored with a point. */
  async readConfigFile(m: PointManifest, name: string): Promise<Buffer> {
    return this.pointStore.readFile(m.vm, m.id, `config/${name}`);
  }

  /** Whether a point is still complete in the repository (not deleted meanwhile). */
  async pointExists(m: PointManifest): Promise<boolean> {
    return this.pointStore.exists(m.vm, m.id);
  }

  /**
   * Opens a read-only image of one disk of a point, through the shared cache. From an S3
   * repository: more readahead, and the point's access map is prefetched and recorded again
   * (access-map.ts).
   */
  async openImage(m: PointManifest, disk: string): Promise<RepoImage> {
    const key = `${m.vm}/${m.id}/${disk}`;
    let entry = this.#openIndexes.get(key);
    if (!entry) {
      const index = await this.readIndex(m, disk);
      entry = this.#openIndexes.get(key) ?? (this.s3 ? await this.#openRemote(m, disk, index) : { index, users: 0 });
      this.#openIndexes.set(key, entry);
    }
    entry.users++;
    const e = entry;
    return new RepoImage(e.index, this.cache, {
      readahead: this.s3 ? S3_READAHEAD_CHUNKS : undefined,
      onChunk: e.recorder ? (i) => e.recorder!.record(i) : undefined,
      onClose: () => {
        if (--e.users > 0) return;
        this.#openIndexes.delete(key);
        e.prefetching?.abort();
        void e.recorder?.close();
      },
    });
  }

  /** The access map of one disk of a point (empty if there is none or it does not fit). */
  async #accessMap(m: PointManifest, disk: string, index: FixedIndex): Promise<number[]> {
    const key = pointPrefix(m.vm, m.id) + accessMapName(disk);
    const body = await this.s3!.objects.get(key).catch(() => undefined);
    let map: Buffer | undefined;
    try {
      map = body && this.s3!.sealer.open(key, body, key);
    } catch {
      map = undefined; // a hint only
    }
    return (map && decodeAccessMap(map, index.count)) || [];
  }

  /** Prefetches what the access maps of a point's disks name (see pin()). Errors only mean no warm-up. */
  async #warm(vm: string, id: string, signal: AbortSignal): Promise<void> {
    try {
      const m = await this.point(vm, id);
      for (const d of m.disks) {
        if (signal.aborted) return;
        const index = await this.readIndex(m, d.name);
        await prefetch(index, await this.#accessMap(m, d.name, index), (digest) => this.s3!.store.readCached(digest), signal);
      }
    } catch {
      // a hint only
    }
  }

  async #openRemote(m: PointManifest, disk: string, index: FixedIndex): Promise<OpenIndex> {
    const { objects, store, sealer } = this.s3!;
    const mapKey = pointPrefix(m.vm, m.id) + accessMapName(disk);
    const loaded = await this.#accessMap(m, disk, index);
    const prefetching = new AbortController();
    // Unless a recovery session's pin() is warming this point already.
    if (loaded.length > 0 && !this.#warming.has(`${m.vm}@${m.id}`)) void prefetch(index, loaded, (d) => store.readCached(d), prefetching.signal);
    const recorder = new AccessRecorder(async (map) => void (await objects.put(mapKey, sealer.seal(mapKey, map))), loaded);
    return { index, users: 0, recorder, prefetching };
  }

  /** Indexes in use by open images (gc marks them even if their point was pruned). */
  openIndexes(): FixedIndex[] {
    return [...this.#openIndexes.values()].map((e) => e.index);
  }

  /**
   * Pins a point (a recovery session runs from it). From an S3 repository this also starts
   * fetching the chunks its disks' access maps name (a warm boot), before the guest asks.
   */
  pin(vm: string, id: string): () => void {
    const key = `${vm}@${id}`;
    this.#pins.set(key, (this.#pins.get(key) ?? 0) + 1);
    const warming = this.s3 && !this.#warming.has(key) ? new AbortController() : undefined;
    if (warming) {
      this.#warming.set(key, warming);
      void this.#warm(vm, id, warming.signal).finally(() => {
        if (this.#warming.get(key) === warming) this.#warming.delete(key);
      });
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      warming?.abort();
      const n = (this.#pins.get(key) ?? 1) - 1;
      if (n > 0) this.#pins.set(key, n);
      else this.#pins.delete(key);
    };
  }

  isPinned(vm: string, id: string): boolean {
    return this.#pins.has(`${vm}@${id}`);
  }

  /**
   * A backup starts writing (chunks, then a point). In a shared bucket it registers itself so
   * that no gc sweeps while it runs (s3-lease.ts); resolves with the function that ends it.
   */
  async beginBackup(signal?: AbortSignal): Promise<() => Promise<void>> {
    if (!this.s3) return async () => undefined;
    return registerBackup(this.s3.objects, this.s3.link.gateway, this.s3.leaseTiming, signal);
  }

  /**
   * Commits a completed backup directory as restore point `m` (see the crash rules in
   * docs/repository-format.md). Resolves with the point as committed: in a shared bucket its id
   * may get a suffix if another gateway took it first.
   */
  async commitPoint(tmp: string, m: PointManifest): Promise<PointManifest> {
    const committed = await this.pointStore.commit(tmp, m);
    if (this.s3) fs.rmSync(tmp, { recursive: true, force: true });
    await this.catalog.put(committed);
    return committed;
  }

  /** Deletes a restore point (its chunks stay until gc). Refuses a pinned point. */
  async deletePoint(vm: string, id: string): Promise<void> {
    if (this.isPinned(vm, id)) throw new ReboundError('ERR_INVALID_ARGUMENT', `restore point ${vm}@${id} is in use by a recovery session`);
    const existed = await this.pointStore.delete(vm, id);
    await this.catalog.delete(vm, id);
    if (!existed) throw new ReboundError('ERR_POINT_NOT_FOUND', `restore point ${vm}@${id} is already gone from the repository`);
  }

  /** Rebuilds the catalog from the manifests in the repository; returns the number of points found. */
  async reindex(): Promise<number> {
    const manifests = sortManifests(await this.pointStore.listManifests());
    await this.catalog.rebuild(manifests);
    return manifests.length;
  }

  /** What `rebound repo info` shows beside the config: backend, caches, object store counters. */
  describe(): Record<string, unknown> {
    const memory = this.cache.stats();
    const out: Record<string, unknown> = {
      backend: this.backend,
      dir: this.dir,
      ...this.config,
      // Never the key: what it is and its fingerprint.
      encryption: this.config.encryption
        ? { algorithm: this.config.encryption.algorithm, chunkIds: this.config.encryption.chunkIds, kdf: this.config.encryption.kdf, fingerprint: this.config.encryption.fingerprint }
        : null,
      cache: { ...memory, hitRate: hitRate(memory.hits, memory.misses) },
    };
    if (this.s3) {
      const { link, objects, diskCache } = this.s3;
      const disk: (DiskCacheStats & { hitRate: number | null }) | null = diskCache ? { ...diskCache.stats(), hitRate: hitRate(diskCache.stats().hits, diskCache.stats().misses) } : null;
      const counters: S3Counters = { ...objects.counters };
      out.s3 = {
        endpoint: link.endpoint,
        bucket: link.bucket,
        prefix: link.prefix,
        region: link.region,
        addressing: link.addressing,
        storageClass: link.storageClass ?? 'STANDARD',
        gateway: link.gateway,
        url: objects.url(''),
        requests: counters,
      };
      out.diskCache = disk;
    }
    return out;
  }

  async close(): Promise<void> {
    // Images still open (a daemon stopping): their access maps are written now, if the endpoint
    // answers within a few seconds (a map is a hint; shutdown does not wait out an outage).
    for (const w of this.#warming.values()) w.abort();
    const flushes = [...this.#openIndexes.values()].map((e) => {
      e.prefetching?.abort();
      return e.recorder?.close();
    });
    await Promise.race([Promise.all(flushes), new Promise((r) => setTimeout(r, CLOSE_FLUSH_MS).unref())]);
    await this.catalog.close();
    this.s3?.objects.close();
  }
}

function hitRate(hits: number, misses: number): number | null {
  return hits + misses === 0 ? null : Math.round((hits / (hits + misses)) * 1000) / 1000;
}

function sortManifests(manifests: PointManifest[]): PointManifest[] {
  return manifests.sort((a, b) => (a.vm === b.vm ? a.id.localeCompare(b.id) : a.vm.localeCompare(b.vm)));
}

export function newRepoConfig(opts: { chunkSize?: number; codec?: Codec }): RepoConfig {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (chunkSize < 4096 || chunkSize > 16 * 1024 * 1024 || (chunkSize & (chunkSize - 1)) !== 0) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `invalid chunk size ${chunkSize}: a power of two from 4K to 16M`);
  }
  return { format: REPO_FORMAT, version: REPO_VERSION, chunkSize, codec: (opts.codec ?? ZSTD).name, createdAt: new Date().toISOString() };
}

export function checkRepoConfig(config: RepoConfig, where: string): RepoConfig {
  if (config?.format !== REPO_FORMAT) throw new ReboundError('ERR_REPO_CORRUPT', `${where}/repo.json is not a rebound repository`);
  if (config.version !== REPO_VERSION) {
    throw new ReboundError('ERR_REPO_CORRUPT', `${where} has repository format ${config.version}; this rebound reads ${REPO_VERSION}`);
  }
  return config;
}

/**
 * Creates a local repository in `dir` (DATA/repo): repo.json and its directories. With `keyFile`
 * it is encrypted with that key (repo-crypto.ts); `recordKeyFile` keeps the key file's path in
 * repo.json (`repo init --encrypt`) so the daemon finds it without repoKeyFile.
 */
export function createLocalRepository(dir: string, opts: { chunkSize?: number; codec?: Codec; keyFile?: string; recordKeyFile?: boolean }): RepoConfig {
  const config = newRepoConfig(opts);
  if (opts.keyFile) {
    config.encryption = newEncryptionDescriptor(readKeyFile(opts.keyFile));
    if (opts.recordKeyFile) config.keyFile = opts.keyFile;
  }
  for (const sub of ['chunks', 'vms', 'tmp']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
  writeFileDurable(path.join(dir, 'repo.json'), JSON.stringify(config, null, 2) + '\n');
  return config;
}

/**
 * `rebound repo init --encrypt KEYFILE` without --s3: creates an encrypted local repository in
 * DATA/repo. Refused if the data directory has a repository already (local or linked to a bucket).
 */
export function initLocalRepository(dataDir: string, opts: { chunkSize?: number; keyFile: string }): RepoConfig {
  const dir = path.join(dataDir, 'repo');
  if (readLink(dataDir)) throw new ReboundError('ERR_INVALID_ARGUMENT', `${dir}/s3.json already links this data directory to a bucket`);
  if (fs.existsSync(path.join(dir, 'repo.json'))) throw new ReboundError('ERR_INVALID_ARGUMENT', `${dir} holds a repository already (encryption is chosen when a repository is created)`);
  return createLocalRepository(dir, { ...opts, recordKeyFile: true });
}

/**
 * The subkeys of a repository from its key file, or undefined if it is not encrypted. ERR_REPO_KEY
 * for an encrypted repository without a key or with another key, and for a key given to a
 * repository that is not encrypted (the operator believes the data is encrypted: it is not).
 */
export function repositoryKeys(config: RepoConfig, keyFile: string | undefined, where: string): RepoKeys | undefined {
  if (config.encryption) return openKeys(config.encryption, keyFile, where);
  if (keyFile) throw new ReboundError('ERR_REPO_KEY', `a repository key file is set (${keyFile}), but the repository ${where} is not encrypted`);
  return undefined;
}

/** The repository descriptor in the bucket (written by `rebound repo init --s3`). */
export async function readRemoteConfig(objects: S3Objects): Promise<RepoConfig> {
  const body = await objects.get('repo.json');
  if (!body) throw new ReboundError('ERR_REPO_CORRUPT', `${objects.url('repo.json')} does not exist: run 'rebound repo init --s3 ...' first`);
  let parsed: RepoConfig;
  try {
    parsed = JSON.parse(body.toString('utf8')) as RepoConfig;
  } catch (err) {
    throw new ReboundError('ERR_REPO_CORRUPT', `${objects.url('repo.json')} is not valid JSON`, { cause: err });
  }
  return checkRepoConfig(parsed, objects.url(''));
}
