/**
 * NbdClientDevice: an NBD export on another server (qemu-nbd, nbdkit, QEMU's NBD server) as a
 * BlockDevice, over nbd/client.ts. It is a backup source (`rebound backup nbd://...`) and a
 * restore or migration target (after a switch it is the VM's disk).
 *
 * Design notes:
 *  - Writable or read-only as the server says (NBD_FLAG_READ_ONLY), or read-only on request (a
 *    backup source is never written, whatever the export allows). A read-only device refuses the
 *    write path itself with EROFS; nothing is sent.
 *  - What the server lacks is emulated (emulate.ts), so every writable device offers FUA (a FLUSH
 *    after the write) and WRITE_ZEROES (written zeroes, not fast). TRIM only when the server has it.
 *  - Extents come from base:allocation when the server offers it (it is asked for at connect; a
 *    server without it is connected to again without). Any doubt (no context, no descriptor, a
 *    descriptor of length 0) is answered as data: a wrong "zero" corrupts every copy.
 *  - `size` may show a prefix of the export (a target larger than the disk it receives).
 *  - Errors are BlockErrors naming the export; the server's ENOSPC stays ENOSPC.
 *
 * Opening fails with the client's error, or an Error saying why the export does not fit; the
 * caller decides which domain error that is (ERR_TARGET_OPEN_FAILED, ERR_BACKUP_SOURCE).
 */
import { BlockError, errorText } from '../../errors.js';
import { NbdClient, type BlockStatusDescriptor } from '../../nbd/client.js';
import { STATE_HOLE, STATE_ZERO, TFlag } from '../../nbd/protocol.js';
import { allData, withFuaByFlush, zeroByWriting } from '../emulate.js';
import type { BlockDevice, BlockSizeConstraints, Capabilities, Extent, IoOptions, WriteOptions, ZeroOptions } from '../types.js';
import { MAX_REQUEST_BYTES, readOnlyCapabilities } from '../types.js';

export const BASE_ALLOCATION = 'base:allocation';
/** One BLOCK_STATUS, TRIM or WRITE_ZEROES request covers at most this much (the wire length is 32-bit). */
const MAX_RANGE = 1024 * 1024 * 1024;

export interface NbdClientDeviceOptions {
  /** Show only the first `size` bytes of the export (it must hold at least that many). Default: all. */
  size?: number;
  /** Fail the open unless the export is writable (a target). */
  writable?: boolean;
  /** Refuse the write path even if the export is writable (a source). */
  readOnly?: boolean;
  /** Meta contexts to negotiate besides base:allocation (e.g. qemu:dirty-bitmap:NAME); required. */
  metaContexts?: string[];
}

export class NbdClientDevice implements BlockDevice {
  readonly name = 'nbd-client';
  /** The URI as given. */
  readonly spec: string;
  readonly size: number;
  /** An export never starts out known empty: old data may be there. */
  readonly fresh = false;
  readonly #c: NbdClient;
  readonly #writable: boolean;
  readonly #caps: Capabilities;

  private constructor(spec: string, client: NbdClient, size: number, writable: boolean) {
    this.spec = spec;
    this.#c = client;
    this.size = size;
    this.#writable = writable;
    this.#caps = capabilitiesOf(client, writable);
  }

  static async open(uri: string, opts: NbdClientDeviceOptions = {}): Promise<NbdClientDevice> {
    const extra = opts.metaContexts ?? [];
    let client: NbdClient;
    try {
      client = await NbdClient.connect(uri, { metaContexts: [BASE_ALLOCATION, ...extra] });
    } catch (err) {
      if (extra.length > 0 || !/meta context|structured replies|SET_META_CONTEXT/.test(errorText(err))) throw err;
      client = await NbdClient.connect(uri); // no base:allocation here: extents report data
    }
    const size = opts.size ?? client.size;
    const refuse = (why: string): never => {
      client.destroy();
      throw new Error(why);
    };
    if (opts.writable && client.readOnly) refuse('the export is read-only');
    if (client.size < size) refuse(`the export has ${client.size} bytes; the disk needs ${size}`);
    return new NbdClientDevice(uri, client, size, !client.readOnly && !opts.readOnly);
  }

  capabilities(): Capabilities {
    return this.#caps;
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    return this.#named(this.#c.read(dst, offset), 'reading');
  }

  async write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    this.#checkWritable();
    if (opts?.fua && !this.#has(TFlag.SEND_FUA)) return withFuaByFlush(opts, () => this.flush(), () => this.write(src, offset));
    return this.#named(this.#c.write(src, offset, { fua: opts?.fua }), 'writing');
  }

  async flush(_opts?: IoOptions): Promise<void> {
    // Read-only, or a server without a cache to flush: nothing to make stable.
    if (!this.#writable || !this.#has(TFlag.SEND_FLUSH)) return;
    return this.#named(this.#c.flush(), 'flushing');
  }

  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    this.#checkWritable();
    if (!this.#has(TFlag.SEND_TRIM)) throw new BlockError('ENOTSUP', `${this.spec} does not support trim`);
    const fua = opts?.fua && this.#has(TFlag.SEND_FUA);
    await withFuaByFlush(fua ? undefined : opts, () => this.flush(), () =>
      this.#pieces(offset, length, (off, len) => this.#named(this.#c.trim(off, len, { fua }), 'trimming')),
    );
  }

  async zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    this.#checkWritable();
    if (!this.#has(TFlag.SEND_WRITE_ZEROES)) return zeroByWriting(this, offset, length, opts);
    if (opts?.fast && !this.#has(TFlag.SEND_FAST_ZERO)) throw new BlockError('ENOTSUP', `${this.spec} cannot zero fast`);
    const fua = opts?.fua && this.#has(TFlag.SEND_FUA);
    const flags = { fua, noHole: opts?.noHole, fast: opts?.fast };
    await withFuaByFlush(fua ? undefined : opts, () => this.flush(), () =>
      this.#pieces(offset, length, (off, len) => this.#named(this.#c.zero(off, len, flags), 'zeroing')),
    );
  }

  async extents(offset: number, length: number, _opts?: IoOptions): Promise<Extent[]> {
    if (!this.#caps.canExtents) return allData(offset, length);
    const out: Extent[] = [];
    let pos = offset;
    for (const d of await this.blockStatus(BASE_ALLOCATION, offset, length)) {
      const n = Math.min(d.length, offset + length - pos);
      if (!(n > 0)) break;
      out.push({ offset: pos, length: n, hole: (d.flags & STATE_HOLE) !== 0, zero: (d.flags & STATE_ZERO) !== 0 });
      pos += n;
    }
    return out.length > 0 ? out : allData(offset, length);
  }

  /**
   * BLOCK_STATUS descriptors of a negotiated meta context from `offset`, covering at most
   * `length` bytes and 1 GiB, clipped to the device (callers loop on short answers).
   */
  async blockStatus(context: string, offset: number, length: number): Promise<BlockStatusDescriptor[]> {
    if (!this.#c.metaContexts.has(context)) throw new TypeError(`meta context ${context} was not negotiated with ${this.spec}`);
    const len = Math.min(length, MAX_RANGE, this.size - offset);
    const status = await this.#named(this.#c.blockStatus(offset, len), 'block status of');
    const out: BlockStatusDescriptor[] = [];
    let left = len;
    for (const d of status.get(context) ?? []) {
      if (left <= 0 || !(d.length > 0)) break;
      out.push({ length: Math.min(d.length, left), flags: d.flags });
      left -= d.length;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.#c.close().catch(() => this.#c.destroy());
  }

  #has(flag: number): boolean {
    return (this.#c.transmissionFlags & flag) !== 0;
  }

  #checkWritable(): void {
    if (!this.#writable) throw new BlockError('EROFS', `${this.spec} is read-only`);
  }

  async #pieces(offset: number, length: number, fn: (off: number, len: number) => Promise<void>): Promise<void> {
    for (let pos = offset; pos < offset + length; pos += MAX_RANGE) await fn(pos, Math.min(MAX_RANGE, offset + length - pos));
  }

  /** Failures name the export; ENOSPC stays ENOSPC. */
  #named<T>(p: Promise<T>, what: string): Promise<T> {
    return p.catch((err: unknown) => {
      const code = err instanceof BlockError ? err.code : 'EIO';
      const text = code === 'ENOSPC' ? `no space left on the target (${errorText(err)})` : errorText(err);
      throw new BlockError(code, `${what} ${this.spec}: ${text}`, { cause: err });
    });
  }
}

function capabilitiesOf(c: NbdClient, writable: boolean): Capabilities {
  const has = (flag: number): boolean => (c.transmissionFlags & flag) !== 0;
  const base = readOnlyCapabilities({ canExtents: c.metaContexts.has(BASE_ALLOCATION), canMultiConn: c.canMultiConn, blockSize: blockSizeOf(c.blockSize) });
  if (!writable) return base;
  return {
    ...base,
    canWrite: true,
    canFua: true,
    canTrim: has(TFlag.SEND_TRIM),
    canZero: true,
    canFastZero: has(TFlag.SEND_WRITE_ZEROES) && has(TFlag.SEND_FAST_ZERO),
  };
}

/** The server's block size constraints, made sane (a server may send odd or no values). */
function blockSizeOf(bs: { min: number; preferred: number; max: number }): BlockSizeConstraints {
  const pow2 = (n: number): boolean => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
  const min = pow2(bs.min) && bs.min <= 65536 ? bs.min : 1;
  const preferred = pow2(bs.preferred) ? Math.max(bs.preferred, min, 512) : Math.max(min, 4096);
  const max = Math.max(preferred, Math.min(bs.max > 0 ? bs.max : MAX_REQUEST_BYTES, MAX_REQUEST_BYTES));
  return { min, preferred, max };
}
