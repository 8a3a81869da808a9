/**
 * The BlockDevice contract (DESIGN.md §3), modelled on nbdkit's plugin/filter layering.
 *
 * What callers may rely on:
 *  - `size` never changes while the device is open; it is a safe integer.
 *  - `read` fills `dst` completely or rejects; it never returns short.
 *  - A write-path call (write, trim, zero) that resolved is visible to every later read on any
 *    connection. It is *stable* (survives a crash) once a later `flush` resolved, or at once if it
 *    carried `fua`.
 *  - `extents` answers with at least one extent, contiguous from `offset`, and may answer short
 *    (callers loop). An extent marked `zero` reads as zeroes; when unsure a device reports data.
 *  - Errors are `BlockError`s with a POSIX code. `checked()` (checked.ts) is the one place that
 *    validates arguments and capabilities; devices may assume validated input when called through it.
 */

export interface BlockSizeConstraints {
  /** Smallest request alignment the device accepts (power of two, 1..64 KiB). */
  min: number;
  /** The size the device works best with (power of two, >= max(min, 512)). */
  preferred: number;
  /** Largest read or write payload in one request. */
  max: number;
}

export interface Capabilities {
  canWrite: boolean;
  canFlush: boolean;
  canFua: boolean;
  canTrim: boolean;
  canZero: boolean;
  /** Zeroing is cheap (no data written); `zero(..., {fast: true})` may be used. */
  canFastZero: boolean;
  /** `extents` gives useful answers (not just "all data"). */
  canExtents: boolean;
  /** A flush on one connection makes writes of every connection stable (no per-connection cache). */
  canMultiConn: boolean;
  blockSize: BlockSizeConstraints;
}

export interface IoOptions {
  signal?: AbortSignal;
}

export interface WriteOptions extends IoOptions {
  /** Forced unit access: the call resolves only once its data is stable. */
  fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** The range must stay allocated (no hole may be punched). */
  noHole?: boolean;
  /** Fail at once with ENOTSUP, changing nothing, unless zeroing is cheaper than writing zeroes. */
  fast?: boolean;
}

export interface Extent {
  offset: number;
  length: number;
  /** Not allocated in the device (reads as zero unless `zero` is false, which is unusual). */
  hole: boolean;
  /** Reads as zeroes. */
  zero: boolean;
}

export interface BlockDevice {
  /** Layer name for logs: 'raw-file' | 'memory' | 'cow' | 'fault' | ... */
  readonly name: string;
  readonly size: number;
  capabilities(): Capabilities;
  read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void>;
  write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void>;
  flush(opts?: IoOptions): Promise<void>;
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void>;
  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void>;
  extents(offset: number, length: number, opts?: IoOptions): Promise<Extent[]>;
  close(): Promise<void>;
  /**
   * Optional. When bytes [offset, offset + length) are one stretch of a file this device holds
   * open and never changes (a read-only raw image), calls `send` with where they lie and resolves
   * true once it settled; resolves false at once, without calling `send`, otherwise. A front end
   * may then send them from the file (sendfile) instead of `read`ing them. The span is valid until
   * `send` settled. Layers that transform or throttle reads do not offer it; a layer that only
   * observes reads (metering) may pass it through. Called through checked(), which validates the
   * range as for a read.
   */
  withFileSpan?(offset: number, length: number, send: (span: FileSpan) => Promise<void>): Promise<boolean>;
  /**
   * Optional. Fills `dst` from `offset` synchronously when that costs no waiting (the bytes are in
   * memory or the page cache) and returns true; otherwise returns false, and the caller `read`s as
   * usual (which also reports any error). Lets a front end answer a small read without a promise.
   * Same rules as withFileSpan for layers; called through checked().
   */
  readNow?(dst: Uint8Array, offset: number): boolean;
}

/** A stretch of an open file: `fd` stays valid while the device that answered is open. */
export interface FileSpan {
  fd: number;
  position: number;
}

/** The widest request any device in rebound accepts: 64 MiB, as nbdkit (MAX_REQUEST_SIZE). */
export const MAX_REQUEST_BYTES = 64 * 1024 * 1024;

export const DEFAULT_BLOCK_SIZE: BlockSizeConstraints = Object.freeze({
  min: 1,
  preferred: 4096,
  max: MAX_REQUEST_BYTES,
});

/**
 * Capabilities of a read-only source: nothing on the write path. Flush is accepted and has nothing
 * to do (clients such as qemu-img flush on close even on read-only exports).
 */
export function readOnlyCapabilities(overrides: Partial<Capabilities> = {}): Capabilities {
  return {
    canWrite: false,
    canFlush: true,
    canFua: false,
    canTrim: false,
    canZero: false,
    canFastZero: false,
    canExtents: false,
    canMultiConn: true,
    blockSize: DEFAULT_BLOCK_SIZE,
    ...overrides,
  };
}

/** Capabilities of a device with a full, cheap write path (memory, overlays): every feature on. */
export function writableCapabilities(blockSize: BlockSizeConstraints = DEFAULT_BLOCK_SIZE): Capabilities {
  return {
    canWrite: true,
    canFlush: true,
    canFua: true,
    canTrim: true,
    canZero: true,
    canFastZero: true,
    canExtents: true,
    canMultiConn: true,
    blockSize,
  };
}
