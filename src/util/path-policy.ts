/**
 * Paths are policy, not input: which files the HTTP API may read (backup sources, VM config
 * files) and write (restore and migration targets). The admin lists directories in `sourceDirs`
 * and `targetDirs` (config/fields.ts); a path is allowed only if it lies at or below one of them.
 *
 * Rules, in order:
 *  - the path must be absolute and have no `..` component (the CLI sends resolved paths; `..` after
 *    a symlink means something else to the kernel than to path.resolve, so it is refused outright);
 *  - it is resolved like the kernel would: realpath of the file, or for a path that does not exist
 *    yet, realpath of its deepest existing ancestor plus the missing rest. A dangling symlink on
 *    the way is refused (creating the file would follow it anywhere);
 *  - a block device (or anything under /dev) is allowed only by an entry naming that device
 *    exactly (entries under /dev are devices, not directories; /dev/disk/by-id links resolve);
 *  - anything else must be the resolved entry or below it, component-wise (`/data2` is not below
 *    `/data`).
 * Entries are resolved at check time, so a directory created after the daemon started counts.
 *
 * Left out: the check and the later open are two steps, so someone who can rename directories
 * inside an allowed directory can race it; allowed directories should be writable only by the
 * admin. NBD URIs are not paths and are not checked here. An empty list allows nothing.
 *
 * The in-process repository API (backup(), restore()) does not consult this; the HTTP routes do,
 * before anything is opened. The daemon gives its policy to the API (ApiContext.paths);
 * an API without one allows no path.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../errors.js';

export interface PathPolicyOptions {
  /** Directories (and exact /dev entries) backup sources and config files may come from. */
  sourceDirs: readonly string[];
  /** Directories (and exact /dev entries) restores and migrations may write files into. */
  targetDirs: readonly string[];
}

type Kind = 'source' | 'target';

const SETTING: Record<Kind, { key: string; flag: string }> = {
  source: { key: 'sourceDirs', flag: '--source-dir' },
  target: { key: 'targetDirs', flag: '--target-dir' },
};

export class PathPolicy {
  readonly sourceDirs: readonly string[];
  readonly targetDirs: readonly string[];

  constructor(opts: PathPolicyOptions) {
    this.sourceDirs = [...opts.sourceDirs];
    this.targetDirs = [...opts.targetDirs];
  }

  /** A policy that allows no path. */
  static none(): PathPolicy {
    return new PathPolicy({ sourceDirs: [], targetDirs: [] });
  }

  /**
   * Throws ERR_PATH_NOT_ALLOWED unless `file` may be read (backup source, config file);
   * returns its resolved path. `what` names it in the message ('disk source', 'config file').
   */
  checkSource(file: string, what = 'backup source'): string {
    return this.#check('source', file, what);
  }

  /** Throws ERR_PATH_NOT_ALLOWED unless `file` may be written (restore or migration target). */
  checkTarget(file: string, what = 'target'): string {
    return this.#check('target', file, what);
  }

  #check(kind: Kind, file: string, what: string): string {
    const { key, flag } = SETTING[kind];
    const refuse = (why: string): never => {
      throw new ReboundError('ERR_PATH_NOT_ALLOWED', `${what} ${file} ${why}`, { details: { path: file, setting: key, flag } });
    };
    if (!path.isAbsolute(file)) refuse(`is not an absolute path`);
    if (file.split(/[\\/]/).includes('..')) refuse(`contains '..'`);
    const resolved = resolvePath(file);
    if (resolved === undefined) refuse(`is or passes a symbolic link that points nowhere`);
    const entries = kind === 'source' ? this.sourceDirs : this.targetDirs;
    if (isDevice(resolved!)) {
      const exact = entries.filter(isDeviceEntry).map((e) => resolvePath(e) ?? e);
      if (!exact.includes(resolved!)) refuse(`is a device${resolved !== file ? ` (${resolved})` : ''} not listed exactly in ${key} (${flag} DEVICE)`);
      return resolved!;
    }
    const dirs = entries.filter((e) => !isDeviceEntry(e)).map((e) => resolvePath(e) ?? path.resolve(e));
    if (!dirs.some((d) => isAtOrBelow(resolved!, d))) {
      const via = resolved !== file ? `(resolves to ${resolved}) ` : '';
      refuse(`${via}is not below a directory in ${key} (${flag} DIR)${entries.length === 0 ? `, which is empty` : ''}`);
    }
    return resolved!;
  }
}

/** `/dev/...` entries (and entries that are block devices) name one device exactly. */
function isDeviceEntry(entry: string): boolean {
  return isDevice(entry) || isDevice(resolvePath(entry) ?? entry);
}

function isDevice(p: string): boolean {
  if (p === '/dev' || p.startsWith('/dev/')) return true;
  try {
    const st = fs.statSync(p);
    return st.isBlockDevice() || st.isCharacterDevice();
  } catch {
    return false;
  }
}

function isAtOrBelow(p: string, dir: string): boolean {
  if (p === dir) return true;
  return p.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);
}

/**
 * The path the kernel would reach: realpath of `p`, or of its deepest existing ancestor joined
 * with the missing rest. undefined if a component that exists is a symlink that leads nowhere
 * (or loops). `p` is absolute without `..`.
 */
export function resolvePath(p: string): string | undefined {
  let cur = path.normalize(p);
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync.native(cur), ...rest);
    } catch {
      try {
        fs.lstatSync(cur);
        // It exists but cannot be resolved: a dangling or looping symlink, or an unreadable directory.
        return undefined;
      } catch {
        // Missing: try the parent.
      }
      const parent = path.dirname(cur);
      if (parent === cur) return undefined;
      rest.unshift(path.basename(cur));
      cur = parent;
    }
  }
}
