/**
 * checked(): the single validation point in front of a device stack (like nbdkit's server/backend.c).
 *
 * Every front end calls devices through a CheckedDevice. It
 *  - validates offsets, lengths, alignment to the device's minimum block size and the maximum payload;
 *  - checks capabilities before a call (a write to a read-only device is EROFS before any range check,
 *    because NBD clients must see EPERM for it whatever the range);
 *  - validates what `extents` returns (contiguous, starts at the offset, clipped to the request),
 *    because a wrong extent answer silently corrupts copies;
 *  - turns stray exceptions into `BlockError('EIO')` (reported through `onUnexpectedError`);
 *  - counts in-flight requests, so `drain()` and `close()` can wait for them.
 *
 * Devices behind it may assume validated input. Length-0 read/write/trim/zero are accepted no-ops.
 */
import { BlockError, errorText, isBlockError } from '../errors.js';
import type {
  BlockDevice,
  Capabilities,
  Extent,
  FileSpan,
  IoOptions,
  WriteOptions,
  ZeroOptions,
} from './types.js';

export interface CheckedOptions {
  /** Called with any non-BlockError thrown by the device (a bug or an unexpected system error). */
  onUnexpectedError?: (err: unknown, op: string) => void;
  /**
   * What `close()` does once in-flight requests have drained. Default: closes the device below. A
   * shared device (a published disk opened by several front ends) passes a function that drops
   * this opener's reference instead.
   */
  release?: () => Promise<void>;
  /**
   * The capabilities to enforce: those announced to clients (a published disk's). Default: the
   * device's own. They may only narrow what the device can do.
   */
  capabilities?: Capabilities;
}

export class CheckedDevice implements BlockDevice {
  readonly name: string;
  readonly size: number;
  /** The device below (the stack this gate protects). */
  readonly next: BlockDevice;
  readonly #caps: Capabilities;
  readonly #onUnexpected: (err: unknown, op: string) => void;
  readonly #release: () => Promise<void>;
  #inflight = 0;
  #idleWaiters: Array<() => void> = [];
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor(next: BlockDevice, options: CheckedOptions = {}) {
    if (next instanceof CheckedDevice) throw new TypeError(`device ${next.name} is already behind checked(): open it once, through one gate`);
    this.next = next;
    this.name = next.name;
    this.size = next.size;
    const caps = options.capabilities ?? next.capabilities();
    this.#caps = Object.freeze({ ...caps, blockSize: Object.freeze({ ...caps.blockSize }) });
    this.#onUnexpected = options.onUnexpectedError ?? (() => undefined);
    this.#release = options.release ?? (() => next.close());
    if (!Number.isSafeInteger(this.size) || this.size < 0) {
      throw new RangeError(`device ${next.name} has an invalid size ${next.size}`);
    }
  }

  capabilities(): Capabilities {
    return this.#caps;
  }

  /** Requests started and not yet settled. */
  get inflight(): number {
    return this.#inflight;
  }

  get closed(): boolean {
    return this.#closing;
  }

  read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    return this.#run('read', async () => {
      this.#checkRange(offset, dst.length, 'EINVAL', 'read');
      this.#checkPayload(dst.length);
      if (dst.length === 0) return;
      await this.next.read(dst, offset, opts);
    });
  }

  /**
   * Runs `send` with where [offset, offset + length) lies in a file (BlockDevice.withFileSpan of the
   * device below), after the same checks as a read; the device stays open until `send` settled.
   * Resolves false, without calling `send`, when the device cannot say (the caller reads instead).
   */
  withFileSpan(offset: number, length: number, send: (span: FileSpan) => Promise<void>): Promise<boolean> {
    return this.#run('read', async () => {
      this.#checkRange(offset, length, 'EINVAL', 'read');
      this.#checkPayload(length);
      if (length === 0 || !this.next.withFileSpan) return false;
      return this.next.withFileSpan(offset, length, send);
    });
  }

  /** Whether the device below can answer reads synchronously (readNow); asked once by a front end. */
  get canReadNow(): boolean {
    return this.next.readNow !== undefined;
  }

  /**
   * BlockDevice.readNow of the device below, for a request that passes a read's checks; false when
   * it fails them (the caller's ordinary read then reports why), when the gate is closing, or when
   * the device cannot answer at once. Synchronous, so nothing is in flight afterwards.
   */
  readNow(dst: Uint8Array, offset: number): boolean {
    if (this.#closing || !this.next.readNow || dst.length === 0 || dst.length > this.#caps.blockSize.max) return false;
    if (this.#rangeProblem(offset, dst.length, 'EINVAL', 'read')) return false;
    try {
      return this.next.readNow(dst, offset);
    } catch {
      return false;
    }
  }

  write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return this.#run('write', async () => {
      this.#checkWritable('write');
      this.#checkFua(opts);
      this.#checkRange(offset, src.length, 'ENOSPC', 'write');
      this.#checkPayload(src.length);
      if (src.length === 0) return;
      await this.next.write(src, offset, opts);
    });
  }

  flush(opts?: IoOptions): Promise<void> {
    return this.#run('flush', async () => {
      if (!this.#caps.canFlush) throw new BlockError('EINVAL', 'flush is not supported by this device');
      await this.next.flush(opts);
    });
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#run('trim', async () => {
      this.#checkWritable('trim');
      if (!this.#caps.canTrim) throw new BlockError('EINVAL', 'trim is not supported by this device');
      this.#checkFua(opts);
      this.#checkRange(offset, length, 'EINVAL', 'trim');
      if (length === 0) return;
      await this.next.trim(offset, length, opts);
    });
  }

  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#run('zero', async () => {
      this.#checkWritable('zero');
      if (!this.#caps.canZero) throw new BlockError('EINVAL', 'write-zeroes is not supported by this device');
      if (opts?.fast && !this.#caps.canFastZero) throw new BlockError('ENOTSUP', 'fast zero is not supported');
      this.#checkFua(opts);
      this.#checkRange(offset, length, 'ENOSPC', 'zero');
      if (length === 0) return;
      await this.next.zero(offset, length, opts);
    });
  }

  extents(offset: number, length: number, opts?: IoOptions): Promise<Extent[]> {
    return this.#run('extents', async () => {
      this.#checkRange(offset, length, 'EINVAL', 'extents');
      if (length === 0) throw new BlockError('EINVAL', 'extents of an empty range');
      const answer = await this.next.extents(offset, length, opts);
      return validateExtents(answer, offset, length, this.next.name);
    });
  }

  /** Resolves when no request is in flight (new requests may still arrive). */
  drain(): Promise<void> {
    if (this.#inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Refuses new requests (ESHUTDOWN), waits for in-flight ones, then closes (or releases) the device. Idempotent. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closing = true;
      this.#closed = this.drain().then(() => this.#release());
    }
    return this.#closed;
  }

  async #run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.#closing) throw new BlockError('ESHUTDOWN', 'device is shutting down');
    this.#inflight++;
    try {
      return await fn();
    } catch (err) {
      if (isBlockError(err)) throw err;
      this.#onUnexpected(err, op);
      throw new BlockError('EIO', `${op} failed: ${errorText(err)}`, { cause: err });
    } finally {
      if (--this.#inflight === 0) {
        const waiters = this.#idleWaiters;
        this.#idleWaiters = [];
        for (const w of waiters) w();
      }
    }
  }

  #checkWritable(op: string): void {
    if (!this.#caps.canWrite) throw new BlockError('EROFS', `${op} refused: the device is read-only`);
  }

  #checkFua(opts: WriteOptions | undefined): void {
    if (opts?.fua && !this.#caps.canFua) throw new BlockError('EINVAL', 'FUA is not supported by this device');
  }

  #checkPayload(length: number): void {
    if (length > this.#caps.blockSize.max) {
      throw new BlockError('EOVERFLOW', `request of ${length} bytes exceeds the maximum of ${this.#caps.blockSize.max}`);
    }
  }

  #checkRange(offset: number, length: number, pastEndCode: 'EINVAL' | 'ENOSPC', op: string): void {
    const problem = this.#rangeProblem(offset, length, pastEndCode, op);
    if (problem) throw problem;
  }

  /** What is wrong with a range, or undefined when it is valid for this device. */
  #rangeProblem(offset: number, length: number, pastEndCode: 'EINVAL' | 'ENOSPC', op: string): BlockError | undefined {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      return new BlockError('EINVAL', `${op}: invalid offset or length`);
    }
    if (offset + length > this.size) {
      return new BlockError(pastEndCode, `${op} past the end of the device (${offset}+${length} > ${this.size})`);
    }
    const min = this.#caps.blockSize.min;
    if (min > 1 && (offset % min !== 0 || (length % min !== 0 && offset + length !== this.size))) {
      return new BlockError('EINVAL', `${op}: offset and length must be multiples of ${min}`);
    }
    return undefined;
  }
}

/** Checks and clips an extents answer; a malformed answer is a device bug and fails with EIO. */
export function validateExtents(answer: Extent[], offset: number, length: number, device: string): Extent[] {
  const end = offset + length;
  const out: Extent[] = [];
  let pos = offset;
  for (const e of answer) {
    if (pos >= end) break;
    if (e.offset !== pos || !(e.length > 0) || !Number.isSafeInteger(e.length)) {
      throw new BlockError('EIO', `device ${device} returned malformed extents at ${pos}`);
    }
    const len = Math.min(e.length, end - pos);
    const last = out[out.length - 1];
    if (last && last.hole === e.hole && last.zero === e.zero) last.length += len;
    else out.push({ offset: pos, length: len, hole: e.hole, zero: e.zero });
    pos += len;
  }
  if (out.length === 0) throw new BlockError('EIO', `device ${device} returned no extents for ${offset}`);
  return out;
}

/**
 * Puts `next` behind the gate. Each opener gets its own CheckedDevice (its own error hook and
 * in-flight count); a device that is already checked is refused, because a second gate would
 * silently keep the first one's hook.
 */
export function checked(next: BlockDevice, options?: CheckedOptions): CheckedDevice {
  return new CheckedDevice(next, options);
}
