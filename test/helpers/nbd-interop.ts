/**
 * Shared pieces of the NBD interop tests (test/interop/nbd-*.test.ts):
 *  - a raw test image whose regions hold constant bytes, so `qemu-io read -P BYTE` can check them,
 *    plus one patterned region that shows misplaced data in copies;
 *  - RecordingLayer, which records what reached the device (offsets, FUA, NO_HOLE), so a test can
 *    prove that a client's flags crossed the wire and were not dropped by the server;
 *  - a server log captured as JSON events, to count the connections a client really opened.
 */
import fs from 'node:fs';
import { Layer } from '../../src/blockdev/layer.js';
import type { BlockDevice, IoOptions, WriteOptions, ZeroOptions } from '../../src/blockdev/types.js';
import { createLogger, type Logger } from '../../src/util/log.js';
import { patternBuffer } from './images.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** A region of a test image: a constant byte, or the position-dependent test pattern. */
export interface Region {
  offset: number;
  length: number;
  fill: number | 'pattern';
}

/**
 * The raw image most interop tests read. Its size is a multiple of 4 KiB but not of 64 KiB, and the
 * data/hole boundaries of C and D are unaligned.
 */
export const RAW_SIZE = 5 * MiB + 12 * KiB;
export const RAW_REGIONS = {
  a: { offset: 0, length: 1 * MiB, fill: 0xa5 },
  b: { offset: 2 * MiB, length: 300_000, fill: 'pattern' },
  c: { offset: 3 * MiB + 12345, length: 4096, fill: 0x5a },
  tail: { offset: RAW_SIZE - 70_000, length: 70_000, fill: 0xc3 },
} as const satisfies Record<string, Region>;

/** Writes a sparse raw image: holes everywhere except `regions`. Returns the expected bytes. */
export function makeFilledImage(file: string, size: number, regions: readonly Region[]): Buffer {
  const expected = Buffer.alloc(size);
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, size);
    for (const r of regions) {
      const buf = r.fill === 'pattern' ? patternBuffer(r.offset, r.length) : Buffer.alloc(r.length, r.fill);
      fs.writeSync(fd, buf, 0, buf.length, r.offset);
      buf.copy(expected, r.offset);
    }
  } finally {
    fs.closeSync(fd);
  }
  return expected;
}

export interface DeviceCall {
  op: 'write' | 'flush' | 'trim' | 'zero';
  offset: number;
  length: number;
  fua: boolean;
  noHole: boolean;
  fast: boolean;
}

/** Passes everything on and records the write path (tests only). */
export class RecordingLayer extends Layer {
  readonly name = 'recording';
  readonly calls: DeviceCall[] = [];

  constructor(next: BlockDevice) {
    super(next);
  }

  #record(op: DeviceCall['op'], offset: number, length: number, opts?: ZeroOptions): void {
    this.calls.push({ op, offset, length, fua: !!opts?.fua, noHole: !!opts?.noHole, fast: !!opts?.fast });
  }

  write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    this.#record('write', offset, src.length, opts);
    return this.next.write(src, offset, opts);
  }

  flush(opts?: IoOptions): Promise<void> {
    this.#record('flush', 0, 0);
    return this.next.flush(opts);
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    this.#record('trim', offset, length, opts);
    return this.next.trim(offset, length, opts);
  }

  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    this.#record('zero', offset, length, opts);
    return this.next.zero(offset, length, opts);
  }
}

export interface LogEvent {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/**
 * A server logger that keeps info-and-above events in memory. With REBOUND_TEST_LOG set it logs at
 * debug level and also writes every line to stderr.
 */
export function captureLog(): { log: Logger; events: LogEvent[] } {
  const events: LogEvent[] = [];
  const echo = !!process.env.REBOUND_TEST_LOG;
  const log = createLogger({
    level: echo ? 'debug' : 'info',
    format: 'json',
    write: (line) => {
      events.push(JSON.parse(line) as LogEvent);
      if (echo) process.stderr.write(line + '\n');
    },
  });
  return { log, events };
}

/** Connections the server accepted for `exportName` (events since `since`). */
export function connectionsTo(events: LogEvent[], exportName: string, since = 0): number {
  return events.slice(since).filter((e) => e.msg === 'client connected' && e.export === exportName).length;
}

/** Compares `actual` with `expected` and names the first differing offset (better than a 5 MiB diff). */
export function firstDifference(actual: Uint8Array, expected: Uint8Array): number | undefined {
  if (actual.length !== expected.length) return Math.min(actual.length, expected.length);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.length);
  if (a.equals(expected)) return undefined;
  for (let i = 0; i < a.length; i++) if (a[i] !== expected[i]) return i;
  return undefined;
}
