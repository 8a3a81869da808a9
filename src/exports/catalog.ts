/**
 * The publication catalog: the one place where a disk becomes visible to clients. Every published
 * disk — a restore point's disk, a recovery session's disk, an ad-hoc `--export` — is one entry
 * with its metadata and the front ends it is published on. NBD, NFS, FUSE (and later iSCSI) only
 * render the catalog into their own namespace, through `view(frontEnd)`.
 *
 * Design notes:
 *  - An entry's device is opened on the first `open()` (a restore point's index can be tens of MiB,
 *    so publishing costs nothing), shared by every opener, and closed when the entry has been
 *    unpublished and its last opener has gone. A publisher that keeps owning its device (a session
 *    owns its stack) says `owned: false`; the catalog then never closes it.
 *  - `open()` gives each opener its own `checked()` gate with the opener's error hook; closing that
 *    gate drains the opener's requests and drops its reference. The shared device is never
 *    reachable around the gate.
 *  - Two ways out: `unpublish(name)` hides the entry at once while openers keep working (a point
 *    behind `VM@latest` that moved); `revoke(name)` also closes every opener's gate now (new
 *    requests fail ESHUTDOWN) and resolves once their in-flight requests have drained (a discarded
 *    session).
 *  - Restore points are grouped by VM here and nowhere else; `VM@latest/DISK` is an alias the
 *    catalog resolves to the newest point's entry (front ends that show names, like NBD, list it).
 *  - Events: 'added', 'changed' (metadata such as a session disk's state), 'removed'.
 */
import { EventEmitter } from 'node:events';
import { checked, type CheckedDevice } from '../blockdev/checked.js';
import { describeStack } from '../blockdev/layer.js';
import type { BlockDevice, Capabilities } from '../blockdev/types.js';
import { errorText, ReboundError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';

export type FrontEnd = 'nbd' | 'nfs' | 'fuse' | 'iscsi';
export const FRONT_ENDS: readonly FrontEnd[] = ['nbd', 'nfs', 'fuse', 'iscsi'];

export type EntryKind = 'point' | 'session' | 'adhoc';

/** What the disks of one restore point share. */
export interface PointInfo {
  readonly vm: string;
  /** Restore point id (a UTC time stamp such as 20261122T034000Z; sorts by time). */
  readonly id: string;
  readonly createdAt: Date;
  /** Names of the VM configuration files stored with the point. */
  readonly configs: readonly string[];
  readConfig(name: string): Promise<Buffer>;
}

/** What the disks of one recovery session share. */
export interface SessionInfo {
  /** Unique, stable session name (safe as a path component: [A-Za-z0-9._-]). */
  readonly name: string;
  readonly vm: string;
  /** Restore point id the session was recovered from. */
  readonly pointId: string;
  readonly createdAt: Date;
  /** A directory front ends may keep their own files in (e.g. NFS's `nfs/`); removed with the session. */
  readonly filesDir: string;
}

export interface PublishRequest {
  /** Unique name; also the NBD export name. Printable: A-Z a-z 0-9 . _ @ / : + - */
  name: string;
  kind: EntryKind;
  /** Disk name (within its point or session). */
  disk: string;
  size: number;
  /** Capabilities of the device `open` will give; known before it is opened. */
  capabilities: Capabilities;
  publish: readonly FrontEnd[];
  description?: string;
  /** Where the data comes from, for listings (a path, `repo:VM@POINT/DISK`, `session:NAME/DISK`). */
  source?: string;
  point?: PointInfo;
  session?: SessionInfo;
  /** Opens the device (on the first `open()` of the entry). Give this or `device`. */
  open?: () => Promise<BlockDevice>;
  /** A device already open (an ad-hoc export is opened at start-up, so a bad source fails at once). */
  device?: BlockDevice;
  /** The catalog closes the device when the entry is gone and unused. Default true. */
  owned?: boolean;
  /** Extra facts for listings (overlay size, state, ...), computed when listed. */
  details?: () => Record<string, unknown>;
  /** TLS identities admitted to this disk besides the admin's rules (a session's `--allow`; tls/access.ts). */
  allow?: readonly string[];
}

/**
 * A layer the catalog puts between every opener's gate and the shared device (metrics/io-meter.ts
 * counts I/O there: every front end opens disks through `open()`, so NBD, NFS, FUSE and iSCSI are
 * counted alike). It must pass every call through and must not close the device below.
 */
export type OpenerLayer = (entry: CatalogEntry, device: BlockDevice) => BlockDevice;

export interface OpenOptions {
  /** Called with any non-BlockError the device throws (a bug); the opener logs it its own way. */
  onUnexpectedError?: (err: unknown, op: string) => void;
}

/** A published disk. */
export class CatalogEntry {
  readonly name: string;
  readonly kind: EntryKind;
  readonly disk: string;
  readonly size: number;
  readonly description: string;
  readonly source: string;
  readonly point: PointInfo | undefined;
  readonly session: SessionInfo | undefined;
  readonly publishedOn: ReadonlySet<FrontEnd>;
  readonly allow: readonly string[] | undefined;
  readonly publishedAt = new Date();
  readonly #caps: Capabilities;
  readonly #open: () => Promise<BlockDevice>;
  readonly #owned: boolean;
  readonly #details: (() => Record<string, unknown>) | undefined;
  readonly #gates = new Set<CheckedDevice>();
  #device: Promise<BlockDevice> | undefined;
  #published = true;
  readonly #openerLayer: OpenerLayer | undefined;

  constructor(req: PublishRequest, openerLayer?: OpenerLayer) {
    this.#openerLayer = openerLayer;
    this.name = req.name;
    this.kind = req.kind;
    this.disk = req.disk;
    this.size = req.size;
    this.description = req.description ?? '';
    this.source = req.source ?? req.name;
    this.point = req.point;
    this.session = req.session;
    this.publishedOn = new Set(req.publish);
    this.allow = req.allow && req.allow.length > 0 ? Object.freeze([...req.allow]) : undefined;
    this.#caps = Object.freeze({ ...req.capabilities, blockSize: Object.freeze({ ...req.capabilities.blockSize }) });
    if ((req.open === undefined) === (req.device === undefined)) throw new TypeError('publish needs exactly one of open and device');
    const device = req.device;
    this.#open = req.open ?? (() => Promise.resolve(device!));
    if (device) this.#device = Promise.resolve(device);
    this.#owned = req.owned ?? true;
    this.#details = req.details;
  }

  capabilities(): Capabilities {
    return this.#caps;
  }

  get writable(): boolean {
    return this.#caps.canWrite;
  }

  /** Still in the catalog (new openers welcome). */
  get published(): boolean {
    return this.#published;
  }

  /** Open gates (front-end connections, open files). */
  get openers(): number {
    return this.#gates.size;
  }

  /**
   * Opens the disk for one front-end user: a device behind its own checked() gate. Closing it drains
   * this user's requests and drops the reference. ERR_EXPORT_NOT_FOUND once the entry is unpublished.
   */
  async open(opts: OpenOptions = {}): Promise<CheckedDevice> {
    if (!this.#published) throw new ReboundError('ERR_EXPORT_NOT_FOUND', `'${this.name}' is no longer published`);
    if (!this.#device) {
      const opening = this.#open();
      this.#device = opening;
      opening.catch(() => {
        if (this.#device === opening) this.#device = undefined; // the next opener tries again
      });
    }
    let dev: BlockDevice;
    try {
      dev = await this.#device;
    } catch (err) {
      throw new ReboundError('ERR_SOURCE_OPEN_FAILED', `cannot open '${this.name}': ${errorText(err)}`, { cause: err });
    }
    if (dev.size !== this.size) throw new ReboundError('ERR_INTERNAL', `'${this.name}' opened with ${dev.size} bytes, published with ${this.size}`);
    const gate: CheckedDevice = checked(this.#openerLayer ? this.#openerLayer(this, dev) : dev, {
      capabilities: this.#caps, // what clients were told, whatever the device below could do
      onUnexpectedError: opts.onUnexpectedError,
      release: async () => {
        this.#gates.delete(gate);
        await this.#closeIfDone();
      },
    });
    this.#gates.add(gate);
    return gate;
  }

  /** Layer names of the open device, top down (empty while it has never been opened). */
  async stack(): Promise<string[]> {
    return this.#device ? describeStack(await this.#device) : [];
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      kind: this.kind,
      disk: this.disk,
      ...(this.point ? { vm: this.point.vm, point: this.point.id } : {}),
      ...(this.session ? { vm: this.session.vm, session: this.session.name, point: this.session.pointId } : {}),
      description: this.description,
      source: this.source,
      size: this.size,
      readOnly: !this.writable,
      publishedOn: [...this.publishedOn],
      ...(this.allow ? { allow: [...this.allow] } : {}),
      capabilities: this.#caps,
      connections: this.openers,
      opened: this.#device !== undefined,
      publishedAt: this.publishedAt.toISOString(),
      ...(this.#details ? this.#details() : {}),
    };
  }

  /** @internal Catalog: no new openers; the device closes when the last one leaves. */
  async unpublish(): Promise<void> {
    this.#published = false;
    await this.#closeIfDone();
  }

  /** @internal Catalog: no new openers, every open gate closed now (drained); then the device. */
  async revoke(): Promise<void> {
    this.#published = false;
    await Promise.all([...this.#gates].map((g) => g.close()));
    await this.#closeIfDone();
  }

  async #closeIfDone(): Promise<void> {
    if (this.#published || this.#gates.size > 0 || !this.#device) return;
    const d = this.#device;
    this.#device = undefined;
    if (this.#owned) await d.then((dev) => dev.close(), () => undefined);
  }
}

/** A restore point as a front end sees it: its shared facts and its published disks. */
export interface PointGroup {
  readonly info: PointInfo;
  readonly disks: readonly CatalogEntry[];
}

/** A VM's restore points, oldest first (the last one is `latest`). */
export interface VmGroup {
  readonly vm: string;
  readonly points: readonly PointGroup[];
}

/** A recovery session as a front end sees it. */
export interface SessionGroup {
  readonly info: SessionInfo;
  readonly disks: readonly CatalogEntry[];
}

/** Valid names: NBD allows 4096 bytes; we keep them printable so they work in URIs and logs. */
const NAME_PATTERN = /^[A-Za-z0-9._@/:+-]{1,255}$/;
const LATEST = 'latest';

export function pointEntryName(vm: string, point: string, disk: string): string {
  return `${vm}@${point}/${disk}`;
}

export function sessionEntryName(session: string, disk: string): string {
  return `session/${session}/${disk}`;
}

export class Catalog extends EventEmitter<{ added: [CatalogEntry]; changed: [CatalogEntry]; removed: [CatalogEntry] }> {
  readonly #entries = new Map<string, CatalogEntry>();
  readonly #log: Logger;
  #defaultName: string | undefined;
  /** Bumped on every publish and removal: views keep their groupings until it moves. */
  #version = 0;

  /** Put between each opener's gate and the device of entries published from now on (metrics). */
  openerLayer: OpenerLayer | undefined;

  /** Every entry, whatever it is published on: what `resolve` groups (cached like a view). */
  readonly #all: CatalogView = new CatalogView(this, undefined);

  constructor(log: Logger = silentLogger) {
    super();
    this.#log = log;
    this.setMaxListeners(0); // every front end and mount follows the catalog
  }

  static validateName(name: string): void {
    if (!NAME_PATTERN.test(name)) {
      throw new ReboundError('ERR_INVALID_EXPORT_SPEC', `invalid export name '${name}': use 1-255 characters from A-Z a-z 0-9 . _ @ / : + -`);
    }
  }

  publish(req: PublishRequest): CatalogEntry {
    Catalog.validateName(req.name);
    if (this.#entries.has(req.name)) throw new ReboundError('ERR_EXPORT_EXISTS', `an export named '${req.name}' already exists`);
    if (req.kind === 'point' && !req.point) throw new TypeError('a point entry needs its point');
    if (req.kind === 'session' && !req.session) throw new TypeError('a session entry needs its session');
    const e = new CatalogEntry(req, this.openerLayer);
    this.#entries.set(e.name, e);
    this.#version++;
    this.emit('added', e);
    return e;
  }

  /** Tells front ends that an entry's metadata (details, state) changed. */
  changed(name: string): void {
    const e = this.#entries.get(name);
    if (e) this.emit('changed', e);
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** Changes with every publish and removal (views cache their groupings by it). */
  get version(): number {
    return this.#version;
  }

  /** Every published entry, in publication order. */
  entries(): CatalogEntry[] {
    return [...this.#entries.values()];
  }

  /** The entry a name resolves to: an entry's own name, or `VM@latest/DISK`. */
  resolve(name: string): CatalogEntry | undefined {
    const own = this.#entries.get(name);
    if (own) return own;
    const m = /^(.+)@latest\/([^/]+)$/.exec(name);
    if (!m) return undefined;
    const vm = this.#all.vms().find((v) => v.vm === m[1]);
    return vm?.points.at(-1)?.disks.find((d) => d.disk === m[2]);
  }

  /** The name a client gets for the empty name '' (NBD's default export). */
  get defaultName(): string | undefined {
    return this.#defaultName !== undefined && this.#entries.has(this.#defaultName) ? this.#defaultName : this.#entries.keys().next().value;
  }

  set defaultName(name: string | undefined) {
    this.#defaultName = name;
  }

  /** Restore points grouped by VM (VMs by name, points oldest first). */
  vms(filter: (e: CatalogEntry) => boolean = () => true): VmGroup[] {
    const byVm = new Map<string, Map<string, { info: PointInfo; disks: CatalogEntry[] }>>();
    for (const e of this.#entries.values()) {
      if (e.kind !== 'point' || !filter(e)) continue;
      const p = e.point!;
      let points = byVm.get(p.vm);
      if (!points) byVm.set(p.vm, (points = new Map()));
      let g = points.get(p.id);
      if (!g) points.set(p.id, (g = { info: p, disks: [] }));
      g.disks.push(e);
    }
    return [...byVm.entries()]
      .sort(([a], [b]) => compare(a, b))
      .map(([vm, points]) => ({ vm, points: [...points.values()].sort((a, b) => compare(a.info.id, b.info.id)) }));
  }

  /** Recovery sessions, oldest first. */
  sessions(filter: (e: CatalogEntry) => boolean = () => true): SessionGroup[] {
    const byName = new Map<string, { info: SessionInfo; disks: CatalogEntry[] }>();
    for (const e of this.#entries.values()) {
      if (e.kind !== 'session' || !filter(e)) continue;
      const s = e.session!;
      let g = byName.get(s.name);
      if (!g) byName.set(s.name, (g = { info: s, disks: [] }));
      g.disks.push(e);
    }
    return [...byName.values()].sort((a, b) => a.info.createdAt.getTime() - b.info.createdAt.getTime());
  }

  /** What one front end may see: only entries published on it. */
  view(frontEnd: FrontEnd): CatalogView {
    return new CatalogView(this, frontEnd);
  }

  /** Hides an entry at once; its device closes when its last opener leaves. */
  async unpublish(name: string): Promise<void> {
    await this.#take(name).unpublish();
  }

  /** Hides an entry and closes every opener's gate now; resolves once their requests drained. */
  async revoke(name: string): Promise<void> {
    await this.#take(name).revoke();
  }

  /** Daemon shutdown: revokes everything. */
  async close(): Promise<void> {
    await Promise.all([...this.#entries.keys()].map((n) => this.revoke(n).catch((err) => this.#log.warn('closing a published disk failed', { export: n, err: errorText(err) }))));
  }

  #take(name: string): CatalogEntry {
    const e = this.#entries.get(name);
    if (!e) throw new ReboundError('ERR_EXPORT_NOT_FOUND', `no export named '${name}'`);
    this.#entries.delete(name);
    this.#version++;
    this.emit('removed', e);
    return e;
  }
}

/**
 * The catalog as one front end sees it. Listing methods return only entries published on that
 * front end; `names()` adds the `VM@latest/DISK` aliases for front ends that show names.
 */
export class CatalogView {
  readonly catalog: Catalog;
  /** The front end, or undefined for every entry (the catalog's own view). */
  readonly frontEnd: FrontEnd | undefined;
  readonly #on: (e: CatalogEntry) => boolean;
  /** Groupings as of a catalog version: front ends ask on every request, the catalog rarely changes. */
  #cache: { version: number; vms?: VmGroup[]; sessions?: SessionGroup[] } = { version: -1 };

  constructor(catalog: Catalog, frontEnd: FrontEnd | undefined) {
    this.catalog = catalog;
    this.frontEnd = frontEnd;
    this.#on = frontEnd === undefined ? () => true : (e) => e.publishedOn.has(frontEnd);
  }

  entries(): CatalogEntry[] {
    return this.catalog.entries().filter(this.#on);
  }

  /** Every name a client may ask for, with the entry it resolves to (aliases after the entries). */
  names(): Array<{ name: string; entry: CatalogEntry }> {
    const out = this.entries().map((entry) => ({ name: entry.name, entry }));
    for (const vm of this.vms()) {
      for (const entry of vm.points.at(-1)!.disks) out.push({ name: pointEntryName(vm.vm, LATEST, entry.disk), entry });
    }
    return out;
  }

  /** Resolves a name ('' is the default entry) to an entry published on this front end. */
  get(name: string): CatalogEntry | undefined {
    const e = this.catalog.resolve(name === '' ? (this.catalog.defaultName ?? '') : name);
    return e && this.#on(e) ? e : undefined;
  }

  vms(): VmGroup[] {
    return (this.#current().vms ??= this.catalog.vms(this.#on));
  }

  sessions(): SessionGroup[] {
    return (this.#current().sessions ??= this.catalog.sessions(this.#on));
  }

  #current(): { vms?: VmGroup[]; sessions?: SessionGroup[] } {
    if (this.#cache.version !== this.catalog.version) this.#cache = { version: this.catalog.version };
    return this.#cache;
  }

  session(name: string): SessionGroup | undefined {
    return this.sessions().find((s) => s.info.name === name);
  }

  /** Calls `listener` after any change visible to this front end; returns the unsubscribe function. */
  onChange(listener: (e: CatalogEntry, what: 'added' | 'changed' | 'removed') => void): () => void {
    const on = (what: 'added' | 'changed' | 'removed') => (e: CatalogEntry) => {
      if (this.#on(e)) listener(e, what);
    };
    const handlers = { added: on('added'), changed: on('changed'), removed: on('removed') };
    for (const [k, h] of Object.entries(handlers)) this.catalog.on(k as 'added', h);
    return () => {
      for (const [k, h] of Object.entries(handlers)) this.catalog.off(k as 'added', h);
    };
  }
}

const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
