/**
 * SwitchableDevice: the point where a recovery session's export can be re-pointed from one device
 * (base + overlay) to another (the production copy) while clients stay connected.
 *
 * Design notes:
 *  - `exclusive(fn)` closes the gate for new requests (they queue, in order), waits until every
 *    request already inside has finished, runs fn (the final copy, the swap), then opens the gate.
 *    No request is lost, none runs twice, and none straddles two devices.
 *  - The export's capabilities were announced to clients at connect time, so they stay those of
 *    the first device. When the current device lacks one, the request is adapted: FUA becomes
 *    write + flush, WRITE_ZEROES becomes written zeroes, TRIM (advisory) becomes a no-op, a fast
 *    zero the device cannot do is ENOTSUP (the client's documented fallback), extents report data.
 */
import { allData, withFuaByFlush, zeroByWriting } from '../emulate.js';
import type { BlockDevice, Capabilities, Extent, IoOptions, WriteOptions, ZeroOptions } from '../types.js';

export class SwitchableDevice implements BlockDevice {
  readonly name = 'switch';
  readonly size: number;
  readonly #caps: Capabilities;
  #current: BlockDevice;
  #inflight = 0;
  #gate: Promise<void> | undefined;
  #openGate: (() => void) | undefined;
  #pending = 0;
  #drained: (() => void) | undefined;
  #exclusive: Promise<unknown> = Promise.resolve();

  constructor(initial: BlockDevice) {
    this.#current = initial;
    this.size = initial.size;
    this.#caps = initial.capabilities();
  }

  /** The device requests go to now (describeStack follows it). */
  get next(): BlockDevice {
    return this.#current;
  }

  capabilities(): Capabilities {
    return this.#caps;
  }

  /**
   * Runs fn with no request in flight and new ones held back; fn may call `switchTo`. Calls are
   * serialised.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    // The gate closes now, synchronously: a request issued after this call never slips in.
    if (this.#pending++ === 0) this.#gate = new Promise<void>((r) => (this.#openGate = r));
    const run = this.#exclusive.then(async () => {
      try {
        if (this.#inflight > 0) await new Promise<void>((r) => (this.#drained = r));
        return await fn();
      } finally {
        if (--this.#pending === 0) {
          this.#gate = undefined;
          this.#openGate!();
        }
      }
    });
    this.#exclusive = run.catch(() => undefined);
    return run;
  }

  /** Re-points the device; only inside `exclusive`. Returns the previous device (not closed). */
  switchTo(dev: BlockDevice): BlockDevice {
    if (!this.#gate) throw new Error('switchTo outside exclusive()');
    if (dev.size < this.size) throw new RangeError(`switch target has ${dev.size} bytes, the export ${this.size}`);
    const old = this.#current;
    this.#current = dev;
    return old;
  }

  async #enter(): Promise<BlockDevice> {
    while (this.#gate) await this.#gate;
    this.#inflight++;
    return this.#current;
  }

  #leave(): void {
    if (--this.#inflight === 0 && this.#drained) {
      const d = this.#drained;
      this.#drained = undefined;
      d();
    }
  }

  async #call<T>(fn: (dev: BlockDevice, caps: Capabilities) => Promise<T>): Promise<T> {
    const dev = await this.#enter();
    try {
      return await fn(dev, dev.capabilities());
    } finally {
      this.#leave();
    }
  }

  read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    return this.#call((d) => d.read(dst, offset, opts));
  }

  write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return this.#call((d, caps) => {
      if (!opts?.fua || caps.canFua) return d.write(src, offset, opts);
      return withFuaByFlush(opts, () => d.flush(opts), () => d.write(src, offset, { ...opts, fua: false }));
    });
  }

  flush(opts?: IoOptions): Promise<void> {
    return this.#call((d) => d.flush(opts));
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#call(async (d, caps) => {
      if (!caps.canTrim) return opts?.fua ? d.flush(opts) : undefined;
      if (!opts?.fua || caps.canFua) return d.trim(offset, length, opts);
      return withFuaByFlush(opts, () => d.flush(opts), () => d.trim(offset, length, { ...opts, fua: false }));
    });
  }

  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#call((d, caps) => {
      if (!caps.canZero || (opts?.fast && !caps.canFastZero)) return zeroByWriting(d, offset, length, opts);
      if (!opts?.fua || caps.canFua) return d.zero(offset, length, opts);
      return withFuaByFlush(opts, () => d.flush(opts), () => d.zero(offset, length, { ...opts, fua: false }));
    });
  }

  extents(offset: number, length: number, opts?: IoOptions): Promise<Extent[]> {
    return this.#call(async (d, caps) => (caps.canExtents ? d.extents(offset, length, opts) : allData(offset, length)));
  }

  close(): Promise<void> {
    return this.#current.close();
  }
}
