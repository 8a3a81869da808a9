/**
 * Write targets: where `rebound restore` writes a disk, and the production storage a recovery
 * session's disk is migrated to (and served from after the switch). A file path (created or
 * reused, never shrunk), a block device (blockdev/base/writable-file.ts), or an NBD URI of a
 * writable export such as qemu-nbd or nbdkit on the production host (blockdev/base/nbd-client.ts).
 *
 * Whatever its kind, a target that cannot be opened (cannot be created, too small, read-only,
 * unreachable) is ERR_TARGET_OPEN_FAILED; a failure once open is a BlockError naming the target
 * (ENOSPC stays ENOSPC), which restore reports as ERR_TARGET_IO.
 */
import { NbdClientDevice } from '../blockdev/base/nbd-client.js';
import { WritableFileDevice } from '../blockdev/base/writable-file.js';
import type { BlockDevice } from '../blockdev/types.js';
import { BlockError, errorText, ReboundError } from '../errors.js';
import { isNbdUri } from '../nbd/client.js';
import { checkNbdSocket } from './sources.js';
import type { PathGate } from '../util/path-policy.js';
import type { FileSink } from './backend.js';

export { zeroRange } from '../blockdev/emulate.js';

export interface WriteTarget extends BlockDevice {
  /** The target as the user gave it. */
  readonly spec: string;
  /** True when the target was left empty by this open (zero ranges need no writes). */
  readonly fresh: boolean;
  /** A file target as a sink its chunks can be written into from other threads (backend.ts FileSink). */
  fileSink?(): FileSink;
}

/**
 * Opens a target that shows `size` bytes. `startOver`: a regular file is emptied first (a new
 * copy); without it its content is kept (a resumed copy). `gate` (a request's path policy): a file
 * must be allowed as opened (or its directory, for a new one), an nbd+unix socket as named; its
 * refusal is ERR_PATH_NOT_ALLOWED.
 */
export async function openTarget(spec: string, size: number, opts: { startOver?: boolean; gate?: PathGate } = {}): Promise<WriteTarget> {
  try {
    if (isNbdUri(spec)) {
      if (opts.gate) checkNbdSocket(spec, opts.gate);
      return await NbdClientDevice.open(spec, { size, writable: true });
    }
    return await WritableFileDevice.open(spec, size, opts);
  } catch (err) {
    if (err instanceof ReboundError && (err.code === 'ERR_TARGET_OPEN_FAILED' || err.code === 'ERR_PATH_NOT_ALLOWED' || err.code === 'ERR_INVALID_ARGUMENT')) throw err;
    throw new ReboundError('ERR_TARGET_OPEN_FAILED', `cannot open target ${spec}: ${errorText(err)}`, { cause: err });
  }
}

/** A target's I/O failure as ERR_TARGET_IO, with the target's own message ("no space left on the target"). */
export function targetIoError(err: unknown): unknown {
  return err instanceof BlockError ? new ReboundError('ERR_TARGET_IO', err.message, { cause: err }) : err;
}

/** Bytes written between the flushes that start a target's writeback early (EarlyWriteback). */
export const WRITEBACK_BYTES = 64 * 1024 * 1024;

/**
 * Starts a flush of the target after every WRITEBACK_BYTES written, one at a time, so the target's
 * writeback overlaps a long copy (restore, migration) and the copy's final flush finds little left
 * to write: a file's final fdatasync was 0.6-0.8 s of a 2 s restore and of a 1.8 s migration.
 * A failed flush is reported by `settled()`, as the target's own error.
 */
export class EarlyWriteback {
  readonly #target: BlockDevice;
  #since = 0;
  #running: Promise<void> | undefined;
  #error: unknown;

  constructor(target: BlockDevice) {
    this.#target = target;
  }

  written(bytes: number): void {
    this.#since += bytes;
    if (this.#since < WRITEBACK_BYTES || this.#running) return;
    this.#since = 0;
    this.#running = this.#target.flush().then(
      () => {
        this.#running = undefined;
      },
      (err: unknown) => {
        this.#running = undefined;
        this.#error ??= err;
      },
    );
  }

  /** Waits for a running flush; rejects with the first failed flush's error, if any. */
  async settled(): Promise<void> {
    await this.#running;
    if (this.#error !== undefined) throw this.#error;
  }
}
