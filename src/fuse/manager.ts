/**
 * FuseMounts: the daemon's FUSE mounts, by directory (`--fuse DIR` at start, `rebound mount DIR`
 * and `rebound unmount DIR` through the API). Each mount gets its own FuseTree over the catalog's
 * FUSE view. Mount and unmount calls are serialised. On shutdown every mount is
 * unmounted; a busy one (a loop device still attached) is detached lazily with a warning, since
 * the daemon is going away either way.
 */
import path from 'node:path';
import { errorText, ReboundError } from '../errors.js';
import type { CatalogView } from '../exports/catalog.js';
import type { Logger } from '../util/log.js';
import { Mutex } from '../util/mutex.js';
import { FuseMount, type MountInfo } from './mount.js';
import { FuseTree } from './tree.js';

export interface FuseMountsOptions {
  /** What the mounts show: the catalog as published on FUSE. */
  catalog: CatalogView;
  log: Logger;
}

export class FuseMounts {
  readonly #opts: FuseMountsOptions;
  readonly #mounts = new Map<string, FuseMount>();
  readonly #lock = new Mutex();

  constructor(opts: FuseMountsOptions) {
    this.#opts = opts;
  }

  /** Mounts the file tree at `dir` (absolute). Mounting a directory this daemon already serves is a no-op. */
  mount(dir: string): Promise<MountInfo> {
    const abs = checkDir(dir);
    return this.#lock.run(async () => {
      const existing = this.#mounts.get(abs);
      if (existing) return existing.info();
      const log = this.#opts.log.child({ mount: abs });
      const tree = new FuseTree({ catalog: this.#opts.catalog, log });
      let m: FuseMount;
      try {
        m = await FuseMount.mount({ dir: abs, tree, log });
      } catch (err) {
        tree.close();
        throw err;
      }
      this.#mounts.set(abs, m);
      log.info('FUSE file tree mounted', { dir: abs });
      return m.info();
    });
  }

  /** Unmounts `dir`; ERR_MOUNT_NOT_FOUND if this daemon has no mount there, ERR_MOUNT_FAILED if busy. */
  unmount(dir: string, opts: { lazy?: boolean } = {}): Promise<void> {
    const abs = checkDir(dir);
    return this.#lock.run(async () => {
      const m = this.#mounts.get(abs);
      if (!m) throw new ReboundError('ERR_MOUNT_NOT_FOUND', `no file tree of this daemon is mounted at ${abs}`);
      await m.unmount(opts);
      this.#mounts.delete(abs);
    });
  }

  list(): MountInfo[] {
    return [...this.#mounts.values()].map((m) => m.info());
  }

  /** Unmounts everything (daemon shutdown); never throws. */
  close(): Promise<void> {
    return this.#lock.run(async () => {
      for (const [dir, m] of this.#mounts) {
        try {
          await m.unmount();
        } catch (err) {
          this.#opts.log.warn('FUSE mount is busy at shutdown; detaching it lazily', { dir, err: errorText(err) });
          await m.unmount({ lazy: true, closeFiles: true }).catch((e: unknown) => this.#opts.log.error('FUSE unmount failed', { dir, err: errorText(e) }));
        }
        this.#mounts.delete(dir);
      }
    });
  }
}

function checkDir(dir: string): string {
  if (typeof dir !== 'string' || !path.isAbsolute(dir)) throw new ReboundError('ERR_INVALID_ARGUMENT', `mount directory must be an absolute path, got '${dir}'`);
  return path.resolve(dir);
}
