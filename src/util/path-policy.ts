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
 * Checked twice. The routes check the path named in a request before anything starts (a clear
 * 403 at once); the work that then opens it is given a PathGate (`gate()`) that checks what the
 * open actually reached: the real path of the open descriptor (/proc/self/fd/N), with the same
 * rules. So a directory renamed or a symlink planted between the check and the open cannot lead
 * the daemon outside the allowed directories. A file that does not exist yet is created through
 * its parent directory's descriptor (blockdev/base/disk-file.ts), which the gate checked first, so
 * the creation cannot land elsewhere either. The Unix socket of an `nbd+unix://` URI is a path too:
 * it is checked like a file (the connect follows it; a socket has no descriptor to check first).
 * NBD TCP URIs are not paths. An empty list allows nothing.
 *
 * The in-process repository API (backup(), restore()) checks only when given a gate; the HTTP
 * routes and the session manager give one. The daemon gives its policy to the API
 * (ApiContext.paths) and the session manager; an API without one allows no path.
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

export type PathKind = 'source' | 'target';
type Kind = PathKind;

/**
 * What opens a path on a request's behalf asks before using it (the second check, see above).
 * Both throw ERR_PATH_NOT_ALLOWED.
 */
export interface PathGate {
  /** The open descriptor (file, block device, or the directory a new file is created in) is allowed. */
  opened(fd: number): void;
  /** The Unix socket at `socketPath` may be connected to. */
  socket(socketPath: string): void;
}

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

  /** The gate for work that opens `kind` paths on a request's behalf (see the header). */
  gate(kind: PathKind, what: string): PathGate {
    return {
      opened: (fd) => {
        let real: string;
        try {
          real = fs.readlinkSync(`/proc/self/fd/${fd}`);
        } catch (err) {
          throw new ReboundError('ERR_PATH_NOT_ALLOWED', `${what}: cannot tell which file was opened (${(err as Error).message})`, { cause: err });
        }
        this.#admit(kind, real, real, `${what} (as opened)`);
      },
      socket: (socketPath) => void this.#check(kind, socketPath, `${what} socket`),
    };
  }

  #check(kind: Kind, file: string, what: string): string {
    const refuse = (why: string): never => this.#refuse(kind, file, what, why);
    if (!path.isAbsolute(file)) refuse(`is not an absolute path`);
    if (file.split(/[\\/]/).includes('..')) refuse(`contains '..'`);
    const resolved = resolvePath(file);
    if (resolved === undefined) refuse(`is or passes a symbolic link that points nowhere`);
    return this.#admit(kind, file, resolved!, what);
  }

  #refuse(kind: Kind, file: string, what: string, why: string): never {
    const { key, flag } = SETTING[kind];
    throw new ReboundError('ERR_PATH_NOT_ALLOWED', `${what} ${file} ${why}`, { details: { path: file, setting: key, flag } });
  }

  /** Admits `resolved` (the real path of `file`) if it is a listed device or at/below a listed directory. */
  #admit(kind: Kind, file: string, resolved: string, what: string): string {
    const { key, flag } = SETTING[kind];
    const refuse = (why: string): never => this.#refuse(kind, file, what, why);
    const entries = kind === 'source' ? this.sourceDirs : this.targetDirs;
    if (isDevice(resolved)) {
      const exact = entries.filter(isDeviceEntry).map((e) => resolvePath(e) ?? e);
      if (!exact.includes(resolved)) refuse(`is a device${resolved !== file ? ` (${resolved})` : ''} not listed exactly in ${key} (${flag} DEVICE)`);
      return resolved;
    }
    const dirs = entries.filter((e) => !isDeviceEntry(e)).map((e) => resolvePath(e) ?? path.resolve(e));
    if (!dirs.some((d) => isAtOrBelow(resolved, d))) {
      const via = resolved !== file ? `(resolves to ${resolved}) ` : '';
      refuse(`${via}is not below a directory in ${key} (${flag} DIR)${entries.length === 0 ? `, which is empty` : ''}`);
    }
    return resolved;
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
