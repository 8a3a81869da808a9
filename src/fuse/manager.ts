/**
 * FuseMounts: the daemon's FUSE mounts, by directory (`--fuse DIR` at start, `rebound mount DIR`
 * and `rebound unmount DIR` through the API). Each mount gets its own FuseTree over the catalog's
 * FUSE view. Mount and unmount calls are serialised. On shutdown every mount is
 * unmounted; a busy one (a loop device still attached) is detached lazily with a warning, since
 * the daemon is going away either way.
 *
 * A mount directory is checked before anything touches it or takes the lock (`resolveMountDir`):
 * it is resolved through the realpath of its deepest existing ancestor, so a symlink cannot lead
 * elsewhere, and `/` and anything at or under /proc, /sys, /dev, /run is refused with
 * ERR_MOUNT_DIR_NOT_ALLOWED (creating or mounting there can hang or damage the host). Mounts are
 * keyed by that resolved path. One stuck mount cannot keep shutdown waiting: `close()` refuses new
 * mounts at once and waits for the lock at most `closeWaitMs`, then unmounts what it has anyway.
 */
import fs from 'node:fs';
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
  /** How long `close()` waits for a mount or unmount in progress, ms. Default 20 s. */
  closeWaitMs?: number;
}

/** System trees no file tree may be mounted on or under (besides `/` itself). */
export const FORBIDDEN_MOUNT_ROOTS = ['/proc', '/sys', '/dev', '/run'] as const;

export class FuseMounts {
  readonly #opts: FuseMountsOptions;
  readonly #mounts = new Map<string, FuseMount>();
  readonly #lock = new Mutex();
  #closing = false;

  constructor(opts: FuseMountsOptions) {
    this.#opts = opts;
  }

  /** Mounts the file tree at `dir` (absolute). Mounting a directory this daemon already serves is a no-op. */
  async mount(dir: string): Promise<MountInfo> {
    const abs = await resolveMountDir(dir);
    if (this.#closing) throw new ReboundError('ERR_MOUNT_FAILED', `cannot mount at ${abs}: the daemon is stopping`);
    return this.#lock.run(async () => {
      if (this.#closing) throw new ReboundError('ERR_MOUNT_FAILED', `cannot mount at ${abs}: the daemon is stopping`);
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
      if (this.#closing) {
        // close() gave up waiting for this mount: do not leave it behind.
        await m.unmount({ lazy: true, closeFiles: true }).catch(() => undefined);
        throw new ReboundError('ERR_MOUNT_FAILED', `cannot mount at ${abs}: the daemon is stopping`);
      }
      this.#mounts.set(abs, m);
      log.info('FUSE file tree mounted', { dir: abs });
      return m.info();
    });
  }

  /** Unmounts `dir`; ERR_MOUNT_NOT_FOUND if this daemon has no mount there, ERR_MOUNT_FAILED if busy. */
  async unmount(dir: string, opts: { lazy?: boolean } = {}): Promise<void> {
    const abs = checkDir(dir);
    // Mounts are keyed by their resolved path; a path through a symlink still finds its mount.
    const key = this.#mounts.has(abs) ? abs : await resolveMountDir(abs).catch(() => abs);
    return this.#lock.run(async () => {
      const m = this.#mounts.get(key);
      if (!m) throw new ReboundError('ERR_MOUNT_NOT_FOUND', `no file tree of this daemon is mounted at ${abs}`);
      await m.unmount(opts);
      this.#mounts.delete(key);
    });
  }

  list(): MountInfo[] {
    return [...this.#mounts.values()].map((m) => m.info());
  }

  /**
   * Unmounts everything (daemon shutdown); never throws. New mounts are refused from now on; a
   * mount or unmount still running after `closeWaitMs` is left behind (logged) rather than waited for.
   */
  async close(): Promise<void> {
    this.#closing = true;
    const waitMs = this.#opts.closeWaitMs ?? 20_000;
    let timer: NodeJS.Timeout | undefined;
    const gotLock = await Promise.race([
      this.#lock.run(() => this.#unmountAll()).then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), waitMs))),
    ]).finally(() => clearTimeout(timer));
    if (!gotLock) {
      this.#opts.log.error('a FUSE mount or unmount is stuck; closing without waiting for it', { waitedMs: waitMs });
      await this.#unmountAll();
    }
  }

  async #unmountAll(): Promise<void> {
    for (const [dir, m] of this.#mounts) {
      try {
        await m.unmount();
      } catch (err) {
        this.#opts.log.warn('FUSE mount is busy at shutdown; detaching it lazily', { dir, err: errorText(err) });
        await m.unmount({ lazy: true, closeFiles: true }).catch((e: unknown) => this.#opts.log.error('FUSE unmount failed', { dir, err: errorText(e) }));
      }
      this.#mounts.delete(dir);
    }
  }
}

function checkDir(dir: string): string {
  if (typeof dir !== 'string' || !path.isAbsolute(dir)) throw new ReboundError('ERR_INVALID_ARGUMENT', `mount directory must be an absolute path, got '${dir}'`);
  return path.resolve(dir);
}

/**
 * The directory a mount at `dir` would really use: the realpath of its deepest existing ancestor
 * plus the missing rest. ERR_INVALID_ARGUMENT for a relative path, ERR_MOUNT_DIR_NOT_ALLOWED for
 * `/` or a system tree (FORBIDDEN_MOUNT_ROOTS), or a path that cannot be resolved safely.
 */
export async function resolveMountDir(dir: string): Promise<string> {
  const abs = checkDir(dir);
  refuseSystemDir(abs, dir);
  const rest: string[] = [];
  let cur = abs;
  let real: string | undefined;
  // Bounded: each step drops one component, and `/` always resolves.
  for (;;) {
    try {
      real = await fs.promises.realpath(cur);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') {
        // Something is there but cannot be resolved (a stale FUSE mount: ENOTCONN). Going on from its
        // parent is safe only if it is not a symlink, whose target we could not check.
        const st = await fs.promises.lstat(cur).catch(() => undefined);
        if (!st || st.isSymbolicLink()) {
          throw new ReboundError('ERR_MOUNT_DIR_NOT_ALLOWED', `cannot resolve mount directory ${cur}: ${errorText(err)}`, { cause: err });
        }
      }
      const parent = path.dirname(cur);
      if (parent === cur) throw new ReboundError('ERR_MOUNT_DIR_NOT_ALLOWED', `cannot resolve mount directory ${abs}: ${errorText(err)}`, { cause: err });
      rest.unshift(path.basename(cur));
      cur = parent;
    }
  }
  const resolved = path.join(real, ...rest);
  refuseSystemDir(resolved, dir);
  return resolved;
}

function refuseSystemDir(resolved: string, asked: string): void {
  const via = resolved === path.resolve(asked) ? '' : ` (${asked} resolves to ${resolved})`;
  if (resolved === '/') throw new ReboundError('ERR_MOUNT_DIR_NOT_ALLOWED', `cannot mount the file tree on /${via}`);
  for (const root of FORBIDDEN_MOUNT_ROOTS) {
    if (resolved === root || resolved.startsWith(root + '/')) {
      throw new ReboundError('ERR_MOUNT_DIR_NOT_ALLOWED', `cannot mount the file tree at ${resolved}${via}: it is under ${root}, a system directory; use an empty directory elsewhere`);
    }
  }
}
