/**
 * On-disk format of a copy-on-write overlay, version 1. One directory holds:
 *
 *   overlay.json  header, written once at creation (temp file, fsync, rename, fsync dir):
 *                 { format: "rebound-cow-overlay", version: 1, size, blockSize, createdAt,
 *                   base: { size, id } }
 *   data          sparse file of `size` bytes; block i lives at offset i * blockSize (direct
 *                 mapping, as in nbdkit's cow filter), so a long aligned write is one pwrite
 *   map           2 bits per block (block-map.ts: 0 BASE, 1 DATA, 2 ZERO), page p of 4096 bytes
 *                 at offset p * 4096; a page never written (a hole, or past EOF) is all BASE
 *
 * Crash rules (what makes an acknowledged FLUSH/FUA survive kill -9):
 *  1. A write reaches the data file before the in-memory map says DATA; the reply follows both.
 *  2. FLUSH: take the dirty map pages, fdatasync(data), write the pages, fdatasync(map), reply.
 *     Pages are taken *before* the data sync, so every map entry written was backed by synced data.
 *  3. A map page that is written for the first time is first filled with zeroes (all BASE, which
 *     is what a hole already means) while a write is in flight, so that disk space for the map is
 *     claimed by that write (which may fail with ENOSPC and change nothing) and never by a FLUSH.
 *  4. A torn map page after a crash is still consistent: each entry is BASE (old) or a state whose
 *     data was synced before the page was written.
 * Unflushed writes may be lost or partially present after a crash, as on a real disk.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../../../errors.js';
import { writeFileDurableAsync } from '../../../util/durable-file.js';

export const FORMAT_NAME = 'rebound-cow-overlay';
export const FORMAT_VERSION = 1;
export const HEADER_FILE = 'overlay.json';
export const DATA_FILE = 'data';
export const MAP_FILE = 'map';

export interface OverlayHeader {
  format: typeof FORMAT_NAME;
  version: number;
  /** Virtual size in bytes (the base's size). */
  size: number;
  /** Bytes per block (power of two, 512..1 MiB). */
  blockSize: number;
  createdAt: string;
  /** What the overlay sits on; reopening over a different base is refused. */
  base: { size: number; id: string };
}

export async function readHeader(dir: string): Promise<OverlayHeader | undefined> {
  const file = path.join(dir, HEADER_FILE);
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ReboundError('ERR_OVERLAY_CORRUPT', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  let h: OverlayHeader;
  try {
    h = JSON.parse(text) as OverlayHeader;
  } catch (err) {
    throw new ReboundError('ERR_OVERLAY_CORRUPT', `${file} is not valid JSON`, { cause: err });
  }
  // Any JSON may be in the file (null, a number, an object whose version is itself an object).
  if (typeof h !== 'object' || h === null || h.format !== FORMAT_NAME) throw new ReboundError('ERR_OVERLAY_CORRUPT', `${file} is not a rebound overlay header`);
  if (h.version !== FORMAT_VERSION) {
    throw new ReboundError('ERR_OVERLAY_VERSION', `${dir} has overlay format version ${JSON.stringify(h.version)}; this rebound reads version ${FORMAT_VERSION}`);
  }
  if (!Number.isSafeInteger(h.size) || h.size < 0 || !isValidBlockSize(h.blockSize) || typeof h.base?.id !== 'string') {
    throw new ReboundError('ERR_OVERLAY_CORRUPT', `${file} has invalid fields`);
  }
  return h;
}

export function isValidBlockSize(n: number): boolean {
  return Number.isInteger(n) && n >= 512 && n <= 1024 * 1024 && (n & (n - 1)) === 0;
}

/**
 * Creates the directory, the empty data and map files and the header, durably. Asynchronous: an
 * overlay is created while the daemon serves other disks.
 */
export async function createOverlayFiles(dir: string, header: OverlayHeader): Promise<void> {
  await fs.promises.mkdir(dir, { recursive: true });
  for (const name of [DATA_FILE, MAP_FILE]) {
    const fh = await fs.promises.open(path.join(dir, name), 'w');
    try {
      if (name === DATA_FILE) await fh.truncate(header.size);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  await writeFileDurableAsync(path.join(dir, HEADER_FILE), JSON.stringify(header, null, 2) + '\n'); // fsyncs the directory
}
