/**
 * Views: what the file front ends (FUSE, NFS) see of restore points and recovery sessions. They
 * read only through these interfaces (DESIGN §2: front ends never reach into repo/ or recovery/);
 * recovery/ implements them (point-view.ts over the Repository, sessions.ts for sessions).
 *
 * A disk's `device()` is a getter on purpose: after a switch-over the session's disk is served by
 * the production target, and the next call returns that device.
 */
import type { BlockDevice } from '../blockdev/types.js';

export interface PointDiskView {
  readonly name: string;
  readonly size: number;
  /** Opens the disk read-only (through the shared chunk cache). The caller closes it. */
  open(): Promise<BlockDevice>;
}

export interface PointView {
  readonly vm: string;
  /** Restore point id (a UTC time stamp such as 20261122T034000Z; sorts by time). */
  readonly id: string;
  readonly createdAt: Date;
  readonly disks: readonly PointDiskView[];
  /** Names of the VM configuration files stored with the point. */
  readonly configs: readonly string[];
  readConfig(name: string): Promise<Buffer>;
}

export interface PointSource {
  /** Every restore point, oldest first per VM. */
  list(): Promise<PointView[]>;
  /** Called after points are added or removed (backup, prune); returns an unsubscribe function. */
  onChange(listener: () => void): () => void;
}

export interface SessionDiskView {
  /** Disk name as in the restore point (e.g. `disk0`). */
  readonly name: string;
  /** Size in bytes (fixed for the session's life). */
  readonly size: number;
  /** The session's current writable device for this disk (base + overlay, or the target after a switch). */
  device(): BlockDevice;
}

export interface SessionView {
  /** Unique, stable session name (safe as a path component: [A-Za-z0-9._-]). */
  readonly name: string;
  readonly vm: string;
  /** Restore point id the session was recovered from. */
  readonly pointId: string;
  readonly createdAt: Date;
  /** A directory owned by the session; front ends may keep their own files under it (removed with the session). */
  readonly dir: string;
  /** Which front ends publish the session (NBD exports, NFS datastore folder). */
  readonly publish: { nbd: boolean; nfs: boolean };
  readonly disks: readonly SessionDiskView[];
}

export interface SessionSource {
  list(): SessionView[];
  get(name: string): SessionView | undefined;
  /** Called after a session is added or removed; returns an unsubscribe function. */
  onChange(listener: () => void): () => void;
}

/** A fixed set of sessions, for tests and for daemons without sessions. */
export class StaticSessionSource implements SessionSource {
  readonly #sessions: SessionView[];
  readonly #listeners = new Set<() => void>();

  constructor(sessions: SessionView[] = []) {
    this.#sessions = [...sessions];
  }

  list(): SessionView[] {
    return [...this.#sessions];
  }

  get(name: string): SessionView | undefined {
    return this.#sessions.find((s) => s.name === name);
  }

  add(s: SessionView): void {
    this.#sessions.push(s);
    for (const l of this.#listeners) l();
  }

  remove(name: string): void {
    const i = this.#sessions.findIndex((s) => s.name === name);
    if (i >= 0) this.#sessions.splice(i, 1);
    for (const l of this.#listeners) l();
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
