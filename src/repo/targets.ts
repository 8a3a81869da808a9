/**
 * Write targets: where `rebound restore` writes a disk, and the production storage a recovery
 * session's disk is migrated to (and served from after the switch). A file path (created or
 * reused, never shrunk), a block device, or an NBD URI of a writable export (qemu-nbd or nbdkit on
 * the production host). Each opens as a writable BlockDevice; errors carry the target's name so a
 * failed restore or a paused migration says what went wrong.
 */
import fs from 'node:fs';
import { BlockError, errorText, ReboundError } from '../errors.js';
import type { BlockDevice, Capabilities, Extent } from '../blockdev/types.js';
import { writableCapabilities } from '../blockdev/types.js';
import { NbdClient } from '../nbd/client.js';
import { TFlag } from '../nbd/protocol.js';
import { isNbdUri } from './sources.js';
import { fdatasync, pread, pwrite } from '../util/file-io.js';
import { deviceSize } from '../blockdev/base/raw-file.js';

export interface WriteTarget extends BlockDevice {
  /** The target as the user gave it. */
  readonly spec: string;
  /** True when the target was created empty by this open (zero ranges need no writes). */
  readonly fresh: boolean;
}

/** `startOver`: a regular file is emptied first (a new copy); without it its content is kept (a resumed copy). */
export async function openTarget(spec: string, size: number, opts: { startOver?: boolean } = {}): Promise<WriteTarget> {
  return isNbdUri(spec) ? NbdTarget.open(spec, size) : FileTarget.open(spec, size, opts.startOver ?? false);
}

/** Target I/O failures become BlockErrors naming the target (ENOSPC stays ENOSPC). */
function targetFailure(err: unknown, spec: string, what: string): BlockError {
  const code = (err as NodeJS.ErrnoException).code;
  if (err instanceof BlockError) return new BlockError(err.code, `${what} ${spec}: ${err.message}`, { cause: err });
  if (code === 'ENOSPC' || code === 'EDQUOT') return new BlockError('ENOSPC', `${what} ${spec}: no space left on the target`, { cause: err });
  return new BlockError('EIO', `${what} ${spec}: ${errorText(err)}`, { cause: err });
}

class FileTarget implements WriteTarget {
  readonly name = 'file-target';
  readonly spec: string;
  readonly size: number;
  readonly fresh: boolean;
  readonly #fd: number;
  #closed = false;

  private constructor(spec: string, fd: number, size: number, fresh: boolean) {
    this.spec = spec;
    this.#fd = fd;
    this.size = size;
    this.fresh = fresh;
  }

  static async open(spec: string, size: number, startOver: boolean): Promise<FileTarget> {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(spec);
    } catch {
      st = undefined;
    }
    const isDevice = st?.isBlockDevice() ?? false;
    let fd: number;
    try {
      fd = fs.openSync(spec, st ? 'r+' : 'w+');
    } catch (err) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `cannot open target ${spec}: ${errorText(err)}`, { cause: err });
    }
    try {
      const have = await deviceSize(fd, spec);
      if (isDevice && have < size) throw new ReboundError('ERR_INVALID_ARGUMENT', `target ${spec} has ${have} bytes; the disk needs ${size}`);
      // A new file, or one a new copy starts into, begins as all holes.
      const fresh = !isDevice && (!st || startOver);
      if (fresh) fs.ftruncateSync(fd, 0);
      if (!isDevice && (fresh || have < size)) fs.ftruncateSync(fd, size);
      return new FileTarget(spec, fd, size, fresh);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  capabilities(): Capabilities {
    return { ...writableCapabilities(), canTrim: false, canZero: false, canFastZero: false, canExtents: false };
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < dst.length) {
      const n = await pread(this.#fd, dst.subarray(done), offset + done).catch((err) => Promise.reject(targetFailure(err, this.spec, 'reading')));
      if (n === 0) {
        dst.fill(0, done);
        return;
      }
      done += n;
    }
  }

  async write(src: Uint8Array, offset: number, opts?: { fua?: boolean }): Promise<void> {
    await pwrite(this.#fd, src, offset).catch((err) => Promise.reject(targetFailure(err, this.spec, 'writing')));
    if (opts?.fua) await this.flush();
  }

  flush(): Promise<void> {
    return fdatasync(this.#fd).catch((err) => Promise.reject(targetFailure(err, this.spec, 'syncing')));
  }

  trim(): Promise<void> {
    return Promise.reject(new BlockError('ENOTSUP', 'trim is not supported'));
  }

  zero(): Promise<void> {
    return Promise.reject(new BlockError('ENOTSUP', 'zero is not supported'));
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return Promise.resolve([{ offset, length, hole: false, zero: false }]);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    fs.closeSync(this.#fd);
  }
}

class NbdTarget implements WriteTarget {
  readonly name = 'nbd-target';
  readonly spec: string;
  readonly size: number;
  readonly fresh = false;
  readonly #c: NbdClient;

  private constructor(spec: string, c: NbdClient, size: number) {
    this.spec = spec;
    this.#c = c;
    this.size = size;
  }

  static async open(spec: string, size: number): Promise<NbdTarget> {
    let c: NbdClient;
    try {
      c = await NbdClient.connect(spec);
    } catch (err) {
      throw new ReboundError('ERR_TARGET_IO', `cannot connect to target ${spec}: ${errorText(err)}`, { cause: err });
    }
    const fail = (msg: string): never => {
      c.destroy();
      throw new ReboundError('ERR_INVALID_ARGUMENT', `target ${spec} ${msg}`);
    };
    if (c.readOnly) fail('is read-only');
    if (c.size < size) fail(`has ${c.size} bytes; the disk needs ${size}`);
    return new NbdTarget(spec, c, size);
  }

  capabilities(): Capabilities {
    const f = this.#c.transmissionFlags;
    return {
      ...writableCapabilities(),
      canFua: (f & TFlag.SEND_FUA) !== 0,
      canTrim: (f & TFlag.SEND_TRIM) !== 0,
      canZero: (f & TFlag.SEND_WRITE_ZEROES) !== 0,
      canFastZero: (f & TFlag.SEND_FAST_ZERO) !== 0,
      canExtents: false,
      canMultiConn: false,
    };
  }

  #wrap<T>(p: Promise<T>, what: string): Promise<T> {
    return p.catch((err: unknown) => Promise.reject(targetFailure(err, this.spec, what)));
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    return this.#wrap(this.#c.read(dst, offset), 'reading');
  }

  write(src: Uint8Array, offset: number, opts?: { fua?: boolean }): Promise<void> {
    return this.#wrap(this.#c.write(src, offset, { fua: opts?.fua }), 'writing');
  }

  flush(): Promise<void> {
    return this.#wrap(this.#c.flush(), 'flushing');
  }

  trim(offset: number, length: number, opts?: { fua?: boolean }): Promise<void> {
    return this.#wrap(this.#c.trim(offset, length, opts), 'trimming');
  }

  zero(offset: number, length: number, opts?: { fua?: boolean; noHole?: boolean; fast?: boolean }): Promise<void> {
    return this.#wrap(this.#c.zero(offset, length, opts), 'zeroing');
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return Promise.resolve([{ offset, length, hole: false, zero: false }]);
  }

  async close(): Promise<void> {
    await this.#c.close().catch(() => this.#c.destroy());
  }
}

/** Zeroes a range: WRITE_ZEROES where the target offers it, else written zeroes (in pieces). */
export async function zeroRange(target: BlockDevice, off: number, len: number): Promise<void> {
  if (target.capabilities().canZero) {
    try {
      return await target.zero(off, len);
    } catch (err) {
      if (!(err instanceof BlockError && err.code === 'ENOTSUP')) throw err;
    }
  }
  const piece = new Uint8Array(Math.min(len, 4 * 1024 * 1024));
  for (let pos = off; pos < off + len; pos += piece.length) await target.write(piece.subarray(0, Math.min(piece.length, off + len - pos)), pos);
}
