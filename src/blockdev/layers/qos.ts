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

  async charge(bytes: number, signal?: AbortSignal): Promise<void> {
    await Promise.all([this.#ops.take(1, signal), bytes > 0 ? this.#bytes.take(bytes, signal) : undefined]);
  }
}

export class QosLayer extends Layer {
  readonly name = 'qos';
  readonly limiter: QosLimiter;
  readonly #shared: QosLimiter | undefined;

  constructor(next: BlockDevice, limiter: QosLimiter, shared?: QosLimiter) {
    super(next);
    this.limiter = limiter;
    this.#shared = shared;
  }

  async #charge(bytes: number, signal?: AbortSignal): Promise<void> {
    await Promise.all([this.limiter.charge(bytes, signal), this.#shared?.charge(bytes, signal)]);
  }

  override async read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    await this.#charge(dst.length, opts?.signal);
    return this.next.read(dst, offset, opts);
  }

  async write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    await this.#charge(src.length, opts?.signal);
    return this.next.write(src, offset, opts);
  }

  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    await this.#charge(0, opts?.signal);
    return this.next.trim(offset, length, opts);
  }

  async zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    await this.#charge(0, opts?.signal);
    return this.next.zero(offset, length, opts);
  }

  flush(opts?: IoOptions): Promise<void> {
    return this.next.flush(opts);
  }
}
