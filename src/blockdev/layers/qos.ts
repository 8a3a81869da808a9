/**
 * QosLayer: IOPS and bandwidth limits for one export, optionally also charged to limits shared by
 * all exports (the daemon's global QosLimiter), so many recovered VMs cannot starve the repository.
 *
 * Every read, write, trim and zero costs one operation and its length in bytes (trim and zero
 * cost one operation but no bytes: they move no data). Flush and extents are free. Limits are
 * token buckets with debt (util/token-bucket.ts): requests keep their order, a request larger than
 * the burst still passes, and a limit changed through the API applies to the next request.
 */
import { TokenBucket } from '../../util/token-bucket.js';
import { Layer } from '../layer.js';
import type { BlockDevice, IoOptions, WriteOptions, ZeroOptions } from '../types.js';

export interface QosLimits {
  /** Operations per second; 0 or absent: unlimited. */
  iops?: number;
  /** Bytes per second; 0 or absent: unlimited. */
  bps?: number;
}

/** A pair of token buckets; one per export and one shared by all exports. */
export class QosLimiter {
  readonly #ops = new TokenBucket(0);
  readonly #bytes = new TokenBucket(0);
  #limits: QosLimits = {};

  constructor(limits: QosLimits = {}) {
    this.set(limits);
  }

  get limits(): QosLimits {
    return { ...this.#limits };
  }

  set(limits: QosLimits): void {
    this.#limits = { ...(limits.iops ? { iops: limits.iops } : {}), ...(limits.bps ? { bps: limits.bps } : {}) };
    this.#ops.setRate(limits.iops ?? 0);
    this.#bytes.setRate(limits.bps ?? 0);
  }

  /** Pays for one request of `bytes`; undefined when no limit is set (the common case costs nothing). */
  charge(bytes: number, signal?: AbortSignal): Promise<unknown> | undefined {
    if (!this.#limits.iops && !this.#limits.bps) return undefined;
    return Promise.all([this.#ops.take(1, signal), bytes > 0 ? this.#bytes.take(bytes, signal) : undefined]);
  }
}

export class QosLayer extends Layer {
  readonly name = 'qos';
  readonly limiter: QosLimiter;
  readonly #shared: QosLimiter | undefined;
  /** Seconds requests spent waiting for these limits (summed over requests; for metrics). */
  throttledSeconds = 0;

  constructor(next: BlockDevice, limiter: QosLimiter, shared?: QosLimiter) {
    super(next);
    this.limiter = limiter;
    this.#shared = shared;
  }

  /** Runs `op` once this export's and the shared limits allow a request of `bytes`. */
  #paced(bytes: number, signal: AbortSignal | undefined, op: () => Promise<void>): Promise<void> {
    const own = this.limiter.charge(bytes, signal);
    const shared = this.#shared?.charge(bytes, signal);
    if (!own && !shared) return op();
    const start = performance.now();
    return Promise.all([own, shared]).then(() => {
      this.throttledSeconds += (performance.now() - start) / 1000;
      return op();
    });
  }

  override read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    return this.#paced(dst.length, opts?.signal, () => this.next.read(dst, offset, opts));
  }

  write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return this.#paced(src.length, opts?.signal, () => this.next.write(src, offset, opts));
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#paced(0, opts?.signal, () => this.next.trim(offset, length, opts));
  }

  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#paced(0, opts?.signal, () => this.next.zero(offset, length, opts));
  }

  flush(opts?: IoOptions): Promise<void> {
    return this.next.flush(opts);
  }
}
