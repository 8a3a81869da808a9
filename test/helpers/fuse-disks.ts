/**
 * Partitioned disk images for the partition parser and FUSE tests: in-memory MBR (with an EBR
 * chain) and GPT builders with correct CRCs, and a byte-array "disk" that fails loudly (a plain
 * Error, not a ReboundError) on any read past its end, so a test notices an out-of-bounds read.
 */
import { crc32 } from 'node:zlib';
import type { ReadableDisk } from '../../src/blockdev/partitions.js';

export const SECTOR = 512;
export const LINUX_FS_GUID = '0fc63daf-8483-4772-8e79-3d69d8477de4';

export interface MbrEntrySpec {
  type: number;
  start: number;
  count: number;
  boot?: boolean;
}

/** Writes one 16-byte entry of the partition table in the sector at `lba`, and the signature. */
export function writeMbrEntry(disk: Buffer, lba: number, slot: number, e: MbrEntrySpec): void {
  const at = lba * SECTOR + 446 + slot * 16;
  disk[at] = e.boot ? 0x80 : 0;
  disk[at + 4] = e.type;
  disk.writeUInt32LE(e.start, at + 8);
  disk.writeUInt32LE(e.count, at + 12);
  disk[lba * SECTOR + 510] = 0x55;
  disk[lba * SECTOR + 511] = 0xaa;
}

/**
 * An MBR disk: `primaries` in slots 0.., then (optionally) an extended partition in the next slot
 * holding `logicals` (each: sectors relative to its own EBR start, which is laid out by the caller
 * as `ebr` LBAs).
 */
export function buildMbr(size: number, primaries: MbrEntrySpec[], ext?: { slot: number; start: number; count: number; logicals: Array<{ ebr: number; start: number; count: number; type?: number }> }): Buffer {
  const disk = Buffer.alloc(size);
  primaries.forEach((p, i) => writeMbrEntry(disk, 0, i, p));
  disk.writeUInt32LE(0xdeadbeef, 440);
  if (ext) {
    writeMbrEntry(disk, 0, ext.slot, { type: 0x05, start: ext.start, count: ext.count });
    ext.logicals.forEach((l, i) => {
      writeMbrEntry(disk, l.ebr, 0, { type: l.type ?? 0x83, start: l.start, count: l.count });
      const next = ext.logicals[i + 1];
      if (next) writeMbrEntry(disk, l.ebr, 1, { type: 0x05, start: next.ebr - ext.start, count: next.start + next.count });
    });
  }
  return disk;
}

function guidBytes(text: string): Buffer {
  const h = text.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

export interface GptPartSpec {
  first: number;
  last: number;
  type?: string;
  name?: string;
}

/** A GPT disk (protective MBR, primary and backup headers and entry arrays, correct CRCs). */
export function buildGpt(size: number, parts: GptPartSpec[], opts: { ss?: number; entries?: number } = {}): Buffer {
  const ss = opts.ss ?? SECTOR;
  const count = opts.entries ?? 128;
  const sectors = Math.floor(size / ss);
  const entrySectors = Math.ceil((count * 128) / ss);
  const disk = Buffer.alloc(size);
  writeMbrEntry(disk, 0, 0, { type: 0xee, start: 1, count: Math.min(sectors - 1, 0xffffffff) });
  const entries = Buffer.alloc(count * 128);
  parts.forEach((p, i) => {
    const at = i * 128;
    guidBytes(p.type ?? LINUX_FS_GUID).copy(entries, at);
    guidBytes(`00000000-0000-4000-8000-${String(i + 1).padStart(12, '0')}`).copy(entries, at + 16);
    entries.writeBigUInt64LE(BigInt(p.first), at + 32);
    entries.writeBigUInt64LE(BigInt(p.last), at + 40);
    Buffer.from(p.name ?? '', 'utf16le').copy(entries, at + 56, 0, 72);
  });
  const firstUsable = 2 + entrySectors;
  const lastUsable = sectors - 2 - entrySectors;
  const header = (myLba: number, altLba: number, entriesLba: number): Buffer => {
    const h = Buffer.alloc(ss);
    h.write('EFI PART', 0, 'latin1');
    h.writeUInt32LE(0x00010000, 8);
    h.writeUInt32LE(92, 12);
    h.writeBigUInt64LE(BigInt(myLba), 24);
    h.writeBigUInt64LE(BigInt(altLba), 32);
    h.writeBigUInt64LE(BigInt(firstUsable), 40);
    h.writeBigUInt64LE(BigInt(lastUsable), 48);
    guidBytes('12345678-9abc-4def-8123-456789abcdef').copy(h, 56);
    h.writeBigUInt64LE(BigInt(entriesLba), 72);
    h.writeUInt32LE(count, 80);
    h.writeUInt32LE(128, 84);
    h.writeUInt32LE(crc32(entries), 88);
    h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
    return h;
  };
  header(1, sectors - 1, 2).copy(disk, ss);
  entries.copy(disk, 2 * ss);
  entries.copy(disk, (sectors - 1 - entrySectors) * ss);
  header(sectors - 1, 1, sectors - 1 - entrySectors).copy(disk, (sectors - 1) * ss);
  return disk;
}

/** Recomputes the CRCs of a GPT header at `lba` (after a test changed fields on purpose). */
export function fixGptCrcs(disk: Buffer, lba: number, ss = SECTOR): void {
  const h = disk.subarray(lba * ss, (lba + 1) * ss);
  const size = Math.min(h.readUInt32LE(12), ss);
  const entriesLba = Number(h.readBigUInt64LE(72));
  const bytes = h.readUInt32LE(80) * h.readUInt32LE(84);
  if (entriesLba * ss + bytes <= disk.length && bytes <= 4 * 1024 * 1024) h.writeUInt32LE(crc32(disk.subarray(entriesLba * ss, entriesLba * ss + bytes)), 88);
  if (size >= 20) {
    h.writeUInt32LE(0, 16);
    h.writeUInt32LE(crc32(h.subarray(0, size)), 16);
  }
}

/** A disk over a buffer; any read past its end throws a plain Error (a test failure, not a table error). */
export function bufferDisk(buf: Uint8Array): ReadableDisk & { reads: number } {
  const disk = {
    size: buf.length,
    reads: 0,
    async read(dst: Uint8Array, offset: number): Promise<void> {
      disk.reads++;
      if (offset < 0 || offset + dst.length > buf.length) throw new Error(`OUT OF BOUNDS read ${offset}+${dst.length} of ${buf.length}`);
      dst.set(buf.subarray(offset, offset + dst.length));
    },
  };
  return disk;
}
