/**
 * FuseMount: one read-only FUSE mount of a FuseTree, through fuse-native (libfuse 2, multithreaded
 * loop; every callback runs on the main thread, so nothing here blocks: reads are async device reads).
 *
 * Design notes:
 *  - Mount options: `ro` (the kernel refuses writes before they reach us), `use_ino` (our stable
 *    inode numbers, not libfuse's), fsname/subtype `rebound` (shows in /proc/mounts and `df`).
 *    No `kernel_cache`: a session's file changes while the VM runs, so the page cache of a file is
 *    dropped on each open (restore point files do not change, and the loop driver keeps them open).
 *  - Open files live in a handle table (fd -> FileSource): a point disk stays open while a file is
 *    open and is closed on release or unmount. Reads are clipped at the file size (a short read
 *    only at EOF) and go straight into the kernel's buffer.
 *  - Mount hygiene: before mounting, a stale mount left at the directory by a killed daemon
 *    ("Transport endpoint is not connected") is detached (`fusermount -uz`); a live mount or a
 *    non-empty directory is refused. Unmount is `fusermount -u` (not lazy) so a busy mount (a loop
 *    device, a shell inside) is reported instead of silently detached; `lazy` detaches anyway.
 *    A missing directory is created one component at a time without `recursive` (whose loop
 *    never ends on /proc, where mkdir answers ENOENT below an existing directory); the caller
 *    (FuseMounts) has already refused system trees.
 *  - fuse-native's own close runs `fusermount -uz` (always lazy) and cannot report busy; the
 *    subclass below replaces it and then releases the native thread's handle itself.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { errorText, ReboundError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { Errno, toFuseErrno } from './errno.js';
import type { FileSource, FuseTree, Node } from './tree.js';

type Cb = (code: number, ...rest: unknown[]) => void;
interface FuseInstance {
  mnt: string;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}
interface FuseClass {
  new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>): FuseInstance;
}

const require = createRequire(import.meta.url);
let ReboundFuse: FuseClass | undefined;

/** Loads fuse-native once and derives the subclass with our options and unmount. */
function fuseClass(): FuseClass {
  if (ReboundFuse) return ReboundFuse;
  let Fuse: FuseClass;
  let binding: { fuse_native_unmount(mnt: string, thread: unknown): void };
  try {
    Fuse = require('fuse-native') as FuseClass;
    const fuseDir = path.dirname(require.resolve('fuse-native'));
    binding = createRequire(require.resolve('fuse-native'))('node-gyp-build')(fuseDir);
  } catch (err) {
    throw new ReboundError('ERR_MOUNT_FAILED', `cannot load fuse-native: ${errorText(err)}`, { cause: err });
  }
  const Base = Fuse as unknown as new (...a: unknown[]) => Record<string, unknown>;
  const proto = (Fuse as unknown as { prototype: { _fuseOptions(): string } }).prototype;
  class Sub extends Base {
    _fuseOptions(): string {
      const base = proto._fuseOptions.call(this);
      const ours = 'ro,use_ino,fsname=rebound,subtype=rebound';
      return base ? `${base},${ours}` : `-o${ours}`;
    }
    _close(cb: (err: Error | null) => void): void {
      const lazy = this.lazyUnmount === true;
      const mnt = this.mnt as string;
      const done = (err: Error | null, stderr: string): void => {
        if (err) return cb(Object.assign(new Error(stderr.trim() || err.message), { busy: /busy/i.test(stderr) }));
        binding.fuse_native_unmount(mnt, this._thread);
        cb(null);
      };
      execFile('fusermount', [lazy ? '-uz' : '-u', mnt], (err, _out, stderr) => {
        // Without fusermount (fuse-native bundles libfuse, not its tools) root can use umount.
        if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') {
          return execFile('umount', lazy ? ['-l', mnt] : [mnt], (e2, _o2, stderr2) => done(e2, stderr2));
        }
        done(err, stderr);
      });
    }
  }
  ReboundFuse = Sub as unknown as FuseClass;
  return ReboundFuse;
}

export interface MountInfo {
  dir: string;
  mountedAt: string;
  openFiles: number;
  reads: number;
  bytesRead: number;
  errors: number;
}

export interface FuseMountOptions {
  dir: string;
  tree: FuseTree;
  log: Logger;
  /** How long one FUSE request may take before the kernel gets ETIMEDOUT. Default 60 s. */
  requestTimeoutMs?: number;
}

const UID = process.getuid?.() ?? 0;
const GID = process.getgid?.() ?? 0;

export class FuseMount {
  readonly dir: string;
  readonly mountedAt = new Date();
  readonly #tree: FuseTree;
  readonly #log: Logger;
  readonly #files = new Map<number, FileSource>();
  #fuse: FuseInstance | undefined;
  #nextFd = 1;
  #reads = 0;
  #bytesRead = 0;
  #errors = 0;

  private constructor(opts: FuseMountOptions) {
    this.dir = path.resolve(opts.dir);
    this.#tree = opts.tree;
    this.#log = opts.log;
  }

  /** Prepares the directory (stale mount cleanup) and mounts; ERR_MOUNT_FAILED says why not. */
  static async mount(opts: FuseMountOptions): Promise<FuseMount> {
    const m = new FuseMount(opts);
    await prepareMountPoint(m.dir, m.#log);
    const Fuse = fuseClass();
    const fuse = new Fuse(m.dir, m.#ops(), { timeout: opts.requestTimeoutMs ?? 60_000 });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new ReboundError('ERR_MOUNT_FAILED', `mounting ${m.dir} timed out`)), 15_000);
      fuse.mount((err) => {
        clearTimeout(timer);
        if (err) reject(new ReboundError('ERR_MOUNT_FAILED', `cannot mount the file tree at ${m.dir}: ${errorText(err)}`, { cause: err }));
        else resolve();
      });
    });
    m.#fuse = fuse;
    return m;
  }

  info(): MountInfo {
    return { dir: this.dir, mountedAt: this.mountedAt.toISOString(), openFiles: this.#files.size, reads: this.#reads, bytesRead: this.#bytesRead, errors: this.#errors };
  }

  /**
   * Unmounts. Without `lazy` a busy mount fails with ERR_MOUNT_FAILED and stays mounted; with it
   * the mount is detached at once and goes away when its last user does (open files keep being
   * served until then, unless `closeFiles`: the daemon is stopping).
   */
  async unmount(opts: { lazy?: boolean; closeFiles?: boolean } = {}): Promise<void> {
    const fuse = this.#fuse;
    if (!fuse) {
      if (opts.closeFiles) await this.#closeFiles();
      return;
    }
    (fuse as unknown as Record<string, unknown>).lazyUnmount = !!opts.lazy;
    await new Promise<void>((resolve, reject) =>
      fuse.unmount((err) => {
        if (!err) return resolve();
        const busy = (err as { busy?: boolean }).busy;
        reject(
          new ReboundError(
            'ERR_MOUNT_FAILED',
            busy
              ? `cannot unmount ${this.dir}: it is busy (a loop device, a mount or a process still uses files in it: ` +
                  `'losetup -j FILE', 'fuser -vm ${this.dir}'); release them, or unmount lazily (rebound unmount --lazy)`
              : `cannot unmount ${this.dir}: ${errorText(err)}`,
            { cause: err },
          ),
        );
      }),
    );
    this.#fuse = undefined;
    this.#log.info('FUSE file tree unmounted', { dir: this.dir, lazy: !!opts.lazy, openFiles: this.#files.size });
    // After a lazy unmount the kernel keeps the connection while files are open (a loop device):
    // keep serving them; their release callbacks close them. Otherwise nothing can be open.
    if (opts.lazy && !opts.closeFiles && this.#files.size > 0) return;
    await this.#closeFiles();
  }

  /** Closes whatever is still open (daemon shutdown after a lazy unmount). */
  async #closeFiles(): Promise<void> {
    const files = [...this.#files.values()];
    this.#files.clear();
    await Promise.allSettled(files.map((f) => f.close()));
    this.#tree.close();
  }

  // ---- FUSE operations --------------------------------------------------------------------

  #fail(op: string, p: string, err: unknown, cb: Cb): void {
    const errno = toFuseErrno(err);
    if (errno !== Errno.ENOENT) {
      this.#errors++;
      this.#log.warn('FUSE request failed', { op, path: p, errno, err: errorText(err) });
    }
    cb(errno);
  }

  #stat(node: Node): Record<string, unknown> {
    const common = { ino: node.ino, uid: UID, gid: GID, mtime: node.mtime, atime: node.mtime, ctime: node.mtime };
    if (node.kind === 'dir') return { ...common, mode: 0o040555, nlink: 2, size: 4096 };
    if (node.kind === 'link') return { ...common, mode: 0o120777, nlink: 1, size: Buffer.byteLength(node.target) };
    return { ...common, mode: 0o100444, nlink: 1, size: node.size, blksize: 4096, blocks: Math.ceil(node.size / 512) };
  }

  #ops(): Record<string, unknown> {
    return {
      getattr: (p: string, cb: Cb) => {
        this.#tree.lookup(p).then(
          (node) => (node ? cb(0, this.#stat(node)) : cb(Errno.ENOENT)),
          (err) => this.#fail('getattr', p, err, cb),
        );
      },
      readdir: (p: string, cb: Cb) => {
        (async () => {
          const node = await this.#tree.lookup(p);
          if (!node) return cb(Errno.ENOENT);
          if (node.kind !== 'dir') return cb(Errno.ENOTDIR);
          const children = [...(await node.children())];
          cb(0, children.map(([name]) => name), children.map(([, n]) => this.#stat(n)));
        })().catch((err) => this.#fail('readdir', p, err, cb));
      },
      readlink: (p: string, cb: Cb) => {
        this.#tree.lookup(p).then(
          (node) => (node?.kind === 'link' ? cb(0, node.target) : cb(node ? Errno.EINVAL : Errno.ENOENT)),
          (err) => this.#fail('readlink', p, err, cb),
        );
      },
      open: (p: string, flags: number, cb: Cb) => {
        if ((flags & 3) !== 0) return cb(Errno.EROFS);
        (async () => {
          const node = await this.#tree.lookup(p);
          if (!node) return cb(Errno.ENOENT);
          if (node.kind === 'dir') return cb(Errno.EISDIR);
          if (node.kind !== 'file') return cb(Errno.EINVAL);
          const file = await node.open();
          if (!this.#fuse) {
            await file.close();
            return cb(Errno.EIO);
          }
          cb(0, this.#addFile(file));
        })().catch((err) => this.#fail('open', p, err, cb));
      },
      release: (_p: string, fd: number, cb: Cb) => {
        const f = this.#files.get(fd);
        this.#files.delete(fd);
        if (!this.#fuse && this.#files.size === 0) this.#tree.close(); // the last user of a lazy unmount
        if (!f) return cb(0);
        f.close().then(
          () => cb(0),
          (err) => {
            this.#log.warn('closing a file failed', { path: _p, err: errorText(err) });
            cb(0);
          },
        );
      },
      read: (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) => {
        const f = this.#files.get(fd);
        if (!f) return cb(Errno.EBADF);
        const n = Math.max(0, Math.min(len, f.size - pos));
        if (n === 0) return cb(0);
        f.read(buf.subarray(0, n), pos).then(
          () => {
            this.#reads++;
            this.#bytesRead += n;
            cb(n);
          },
          (err) => this.#fail('read', p, err, cb),
        );
      },
      statfs: (_p: string, cb: Cb) => {
        cb(0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 });
      },
    };
  }

  #addFile(f: FileSource): number {
    while (this.#files.has(this.#nextFd)) this.#nextFd = this.#nextFd >= 0xfffffffe ? 1 : this.#nextFd + 1;
    const fd = this.#nextFd;
    this.#nextFd = fd >= 0xfffffffe ? 1 : fd + 1;
    this.#files.set(fd, f);
    return fd;
  }
}

// ---- mount point hygiene --------------------------------------------------------------------

/** The mount at exactly `dir` from /proc/self/mountinfo, if any. */
export function findMount(dir: string): { fstype: string; source: string } | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  let found: { fstype: string; source: string } | undefined;
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    if (unescape(left.split(' ')[4] ?? '') !== dir) continue;
    const [fstype = '', source = ''] = right.split(' ');
    found = { fstype, source }; // the last entry is the one on top
  }
  return found;
}

function run(cmd: string, args: string[]): Promise<{ ok: boolean; stderr: string }> {
  return new Promise((resolve) => execFile(cmd, args, (err, _o, stderr) => resolve({ ok: !err, stderr: stderr.trim() || (err ? err.message : '') })));
}

async function prepareMountPoint(dir: string, log: Logger): Promise<void> {
  if (!fs.existsSync('/dev/fuse')) throw new ReboundError('ERR_MOUNT_FAILED', 'cannot mount: /dev/fuse is missing (load the fuse kernel module: modprobe fuse)');
  const existing = findMount(dir);
  if (existing) {
    let stale = false;
    try {
      await fs.promises.stat(dir);
    } catch (err) {
      stale = (err as NodeJS.ErrnoException).code === 'ENOTCONN' || (err as NodeJS.ErrnoException).code === 'ECONNABORTED';
    }
    if (!stale) {
      throw new ReboundError('ERR_MOUNT_FAILED', `cannot mount at ${dir}: it is already a mount point (${existing.fstype} from ${existing.source}); unmount it first or choose another directory`);
    }
    let r = await run('fusermount', ['-uz', dir]);
    if (!r.ok) r = await run('umount', ['-l', dir]);
    if (!r.ok) throw new ReboundError('ERR_MOUNT_FAILED', `cannot clean up the stale mount at ${dir}: ${r.stderr}`);
    log.warn('cleaned up a stale FUSE mount left by a previous daemon', { dir, fstype: existing.fstype });
  }
  try {
    await makeMountDir(dir);
    const entries = await fs.promises.readdir(dir);
    if (entries.length > 0) throw new ReboundError('ERR_MOUNT_FAILED', `cannot mount at ${dir}: the directory is not empty (${entries.length} entries); use an empty directory`);
  } catch (err) {
    if (err instanceof ReboundError) throw err;
    throw new ReboundError('ERR_MOUNT_FAILED', `cannot use ${dir} as a mount point: ${errorText(err)}`, { cause: err });
  }
}

/** Creates the missing components of `dir` one by one (bounded by its depth); an existing directory is fine. */
async function makeMountDir(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let cur = dir; ; cur = path.dirname(cur)) {
    try {
      const st = await fs.promises.stat(cur);
      if (!st.isDirectory()) throw new ReboundError('ERR_MOUNT_FAILED', `cannot use ${dir} as a mount point: ${cur} is not a directory`);
      break;
    } catch (err) {
      if (err instanceof ReboundError || (err as NodeJS.ErrnoException).code !== 'ENOENT' || path.dirname(cur) === cur) throw err;
      missing.unshift(cur);
    }
  }
  for (const d of missing) {
    try {
      await fs.promises.mkdir(d);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}
