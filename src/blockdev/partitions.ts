/**
 * Partition tables (MBR with logical partitions, and GPT) of a disk, for the file front ends
 * (FUSE `<disk>.parts/<n>`, NFS) and the API. It reads the table through any readable device and
 * never interprets what is inside a partition.
 *
 * Design notes:
 *  - Every read is bounds-checked against the disk size *before* it is issued: a table that points
 *    past the end (an entry array, an EBR, a partition) is an ERR_PARTITION_TABLE error naming what
 *    and where, never a read past the end. All parsing works on DataViews of buffers read whole,
 *    so a malformed field can only produce an error, not an exception from out-of-range access.
 *  - A disk without a recognisable table (no 0x55AA signature, invalid boot flags as on a FAT boot
 *    sector, too small) is `scheme: 'none'` and not an error: a filesystem may sit on the whole disk.
 *  - MBR: 512-byte sectors. Numbering follows Linux: primary slots keep their numbers 1-4 (empty
 *    slots leave gaps), logical partitions count from 5 in chain order. The extended container
 *    itself is not listed (it is a pointer, not data). The EBR chain is followed with a visited
 *    set and a limit (MAX_LOGICAL) so a looping chain is an error, not a hang.
 *  - GPT: the sector size is found by looking for "EFI PART" at LBA 1 for 512 and 4096 bytes. Header
 *    and entry-array CRC32s are checked; when the primary header is damaged the backup header at the
 *    last LBA is used instead (reported in `warnings`). Partitions must lie in the usable range.
 *  - Overlapping data partitions are rejected (sfdisk refuses to write them; a file view of them
 *    would expose the same bytes twice under different names).
 *  - Left out: BSD disklabels and other nested schemes, hybrid MBRs (the GPT wins), 4Kn MBR disks.
 */
import { crc32 } from 'node:zlib';
import { ReboundError } from '../errors.js';

export interface Partition {
  /** Linux numbering: MBR 1-4 primary, 5.. logical; GPT entry index + 1. */
  number: number;
  kind: 'primary' | 'logical' | 'gpt';
  /** Byte offset on the disk. */
  offset: number;
  /** Length in bytes (> 0). */
  size: number;
  /** MBR: the type byte as '0x83'; GPT: the partition type GUID (lower case). */
  type: string;
  /** MBR: the boot flag. */
  bootable?: boolean;
  /** GPT: the unique partition GUID and the partition name. */
  uuid?: string;
  name?: string;
}

export interface PartitionTable {
  scheme: 'mbr' | 'gpt' | 'none';
  sectorSize: number;
  /** MBR: disk signature as 8 hex digits; GPT: the disk GUID. */
  diskId?: string;
  /** Data partitions, by ascending number. */
  partitions: Partition[];
  /** Oddities that did not stop the parse (e.g. the GPT backup header was used). */
  warnings: string[];
}

/** What the parser needs of a device: its size and exact reads. */
export interface ReadableDisk {
  readonly size: number;
  read(dst: Uint8Array, offset: number): Promise<void>;
}

const MBR_SECTOR = 512;
const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
const GPT_PROTECTIVE = 0xee;
const GPT_SIGNATURE = 'EFI PART';
/** Most logical partitions (EBRs) followed; Linux stops at a similar bound. */
export const MAX_LOGICAL = 128;
/** Largest GPT entry array read (128 entries of 128 bytes is 16 KiB; this is generous). */
const MAX_GPT_ENTRY_BYTES = 1024 * 1024;

function fail(label: string, why: string): never {
  throw new ReboundError('ERR_PARTITION_TABLE', `${label}: malformed partition table: ${why}`);
}

async function readAt(disk: ReadableDisk, offset: number, length: number, label: string, what: string): Promise<Uint8Array> {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > disk.size) {
    fail(label, `${what} at byte ${offset} (+${length}) lies past the end of the disk (${disk.size} bytes)`);
  }
  const buf = new Uint8Array(length);
  await disk.read(buf, offset);
  return buf;
}

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

function u64(dv: DataView, at: number, label: string, field: string): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(label, `GPT ${field} ${v} is out of range`);
  return Number(v);
}

/**
 * Reads the partition table of `disk`. `label` names the disk in error messages
 * (e.g. 'vm1@20261122T034000Z/disk0'). Throws ReboundError('ERR_PARTITION_TABLE') for a malformed
 * table; I/O errors of the device pass through unchanged.
 */
export async function readPartitionTable(disk: ReadableDisk, label = 'disk'): Promise<PartitionTable> {
  if (disk.size < MBR_SECTOR) return { scheme: 'none', sectorSize: MBR_SECTOR, partitions: [], warnings: [] };
  const mbr = await readAt(disk, 0, MBR_SECTOR, label, 'the MBR');
  const hasMbr = mbr[510] === 0x55 && mbr[511] === 0xaa;
  const types = [0, 1, 2, 3].map((i) => mbr[446 + i * 16 + 4]!);
  const gptSectorSize = await findGpt(disk);
  if ((hasMbr && types.includes(GPT_PROTECTIVE)) || (!hasMbr && gptSectorSize)) {
    if (!gptSectorSize) fail(label, 'protective MBR (type 0xee) but no GPT header ("EFI PART") at LBA 1');
    return parseGpt(disk, gptSectorSize, label);
  }
  if (!hasMbr) return { scheme: 'none', sectorSize: MBR_SECTOR, partitions: [], warnings: [] };
  // Boot flags other than 0x00/0x80 mean this is not a partition table (e.g. a FAT boot sector).
  for (let i = 0; i < 4; i++) {
    const flag = mbr[446 + i * 16]!;
    if (flag !== 0 && flag !== 0x80) return { scheme: 'none', sectorSize: MBR_SECTOR, partitions: [], warnings: [] };
  }
  return parseMbr(disk, mbr, label);
}

async function findGpt(disk: ReadableDisk): Promise<number | undefined> {
  for (const ss of [512, 4096]) {
    if (disk.size < 2 * ss) continue;
    const sig = await readAt(disk, ss, 8, 'disk', 'the GPT signature');
    if (Buffer.from(sig).toString('latin1') === GPT_SIGNATURE) return ss;
  }
  return undefined;
}

// ---- MBR ------------------------------------------------------------------------------------

interface MbrEntry {
  flag: number;
  type: number;
  start: number;
  count: number;
}

function mbrEntries(sector: Uint8Array): MbrEntry[] {
  const dv = view(sector);
  return [0, 1, 2, 3].map((i) => {
    const at = 446 + i * 16;
    return { flag: dv.getUint8(at), type: dv.getUint8(at + 4), start: dv.getUint32(at + 8, true), count: dv.getUint32(at + 12, true) };
  });
}

const hexType = (t: number): string => `0x${t.toString(16).padStart(2, '0')}`;

async function parseMbr(disk: ReadableDisk, mbr: Uint8Array, label: string): Promise<PartitionTable> {
  const partitions: Partition[] = [];
  const checkInDisk = (what: string, startLba: number, count: number): void => {
    if (startLba === 0) fail(label, `${what} starts at sector 0 (the MBR itself)`);
    const end = (startLba + count) * MBR_SECTOR;
    if (end > disk.size) fail(label, `${what} (sectors ${startLba}+${count}) extends past the end of the disk (${end} > ${disk.size} bytes)`);
  };
  let extended: { start: number; count: number } | undefined;
  const primaries = mbrEntries(mbr);
  for (let i = 0; i < 4; i++) {
    const e = primaries[i]!;
    if (e.type === 0 || e.count === 0) continue;
    checkInDisk(`partition ${i + 1}`, e.start, e.count);
    if (EXTENDED_TYPES.has(e.type)) {
      if (extended) fail(label, 'more than one extended partition');
      extended = { start: e.start, count: e.count };
      continue;
    }
    partitions.push({ number: i + 1, kind: 'primary', offset: e.start * MBR_SECTOR, size: e.count * MBR_SECTOR, type: hexType(e.type), bootable: e.flag === 0x80 });
  }
  if (extended) await parseLogical(disk, extended, partitions, label);
  checkOverlaps(partitions, label);
  const diskId = view(mbr).getUint32(440, true).toString(16).padStart(8, '0');
  return { scheme: 'mbr', sectorSize: MBR_SECTOR, diskId, partitions, warnings: [] };
}

/** Follows the EBR chain of the extended partition; logical partitions are numbered from 5. */
async function parseLogical(disk: ReadableDisk, ext: { start: number; count: number }, out: Partition[], label: string): Promise<void> {
  const extEnd = ext.start + ext.count;
  const seen = new Set<number>();
  let ebrLba = ext.start;
  let number = 5;
  for (let n = 0; ; n++) {
    if (n >= MAX_LOGICAL) fail(label, `more than ${MAX_LOGICAL} logical partitions (EBR chain too long)`);
    if (seen.has(ebrLba)) fail(label, `the EBR chain loops (sector ${ebrLba} is visited twice)`);
    seen.add(ebrLba);
    if (ebrLba < ext.start || ebrLba >= extEnd) fail(label, `EBR at sector ${ebrLba} lies outside the extended partition (sectors ${ext.start}..${extEnd - 1})`);
    const ebr = await readAt(disk, ebrLba * MBR_SECTOR, MBR_SECTOR, label, `EBR ${n + 1}`);
    if (ebr[510] !== 0x55 || ebr[511] !== 0xaa) fail(label, `EBR at sector ${ebrLba} has no 0x55AA signature`);
    const [data, link] = mbrEntries(ebr) as [MbrEntry, MbrEntry];
    if (data.type !== 0 && data.count !== 0 && !EXTENDED_TYPES.has(data.type)) {
      const start = ebrLba + data.start;
      if (data.start === 0) fail(label, `logical partition ${number} starts on its own EBR (sector ${ebrLba})`);
      if (start + data.count > extEnd) {
        fail(label, `logical partition ${number} (sectors ${start}+${data.count}) extends past the extended partition (ends at sector ${extEnd})`);
      }
      out.push({ number, kind: 'logical', offset: start * MBR_SECTOR, size: data.count * MBR_SECTOR, type: hexType(data.type), bootable: data.flag === 0x80 });
      number++;
    }
    if (link.type === 0 || link.count === 0) return;
    if (!EXTENDED_TYPES.has(link.type)) fail(label, `EBR at sector ${ebrLba} links with type ${hexType(link.type)} (expected an extended type)`);
    ebrLba = ext.start + link.start;
  }
}

function checkOverlaps(parts: Partition[], label: string): void {
  const sorted = [...parts].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.offset < a.offset + a.size) fail(label, `partitions ${a.number} and ${b.number} overlap`);
  }
  parts.sort((a, b) => a.number - b.number);
}

// ---- GPT ------------------------------------------------------------------------------------

interface GptHeader {
  myLba: number;
  firstUsable: number;
  lastUsable: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
}

async function parseGpt(disk: ReadableDisk, ss: number, label: string): Promise<PartitionTable> {
  const sectors = Math.floor(disk.size / ss);
  const warnings: string[] = [];
  let header: GptHeader;
  let entries: Uint8Array;
  try {
    header = await readGptHeader(disk, ss, 1, label);
    entries = await readGptEntries(disk, ss, header, label);
  } catch (primaryErr) {
    try {
      header = await readGptHeader(disk, ss, sectors - 1, label);
      entries = await readGptEntries(disk, ss, header, label);
    } catch {
      throw primaryErr;
    }
    warnings.push(`primary GPT unusable (${(primaryErr as Error).message}); using the backup GPT at sector ${sectors - 1}`);
  }
  const partitions: Partition[] = [];
  const dv = view(entries);
  for (let i = 0; i < header.entryCount; i++) {
    const at = i * header.entrySize;
    const typeBytes = entries.subarray(at, at + 16);
    if (typeBytes.every((b) => b === 0)) continue;
    const first = u64(dv, at + 32, label, `entry ${i + 1} first LBA`);
    const last = u64(dv, at + 40, label, `entry ${i + 1} last LBA`);
    if (last < first) fail(label, `partition ${i + 1} ends (LBA ${last}) before it starts (LBA ${first})`);
    if (first < header.firstUsable || last > header.lastUsable) {
      fail(label, `partition ${i + 1} (LBA ${first}..${last}) lies outside the usable range ${header.firstUsable}..${header.lastUsable}`);
    }
    if ((last + 1) * ss > disk.size) fail(label, `partition ${i + 1} (LBA ${first}..${last}) extends past the end of the disk`);
    const nameBytes = entries.subarray(at + 56, at + Math.min(header.entrySize, 128));
    let name = Buffer.from(nameBytes).toString('utf16le');
    const nul = name.indexOf('\0');
    if (nul >= 0) name = name.slice(0, nul);
    partitions.push({
      number: i + 1,
      kind: 'gpt',
      offset: first * ss,
      size: (last - first + 1) * ss,
      type: guid(typeBytes),
      uuid: guid(entries.subarray(at + 16, at + 32)),
      name,
    });
  }
  checkOverlaps(partitions, label);
  return { scheme: 'gpt', sectorSize: ss, diskId: header.diskGuid, partitions, warnings };
}

async function readGptHeader(disk: ReadableDisk, ss: number, lba: number, label: string): Promise<GptHeader> {
  const where = lba === 1 ? 'primary GPT header' : 'backup GPT header';
  if (lba < 1) fail(label, `the disk is too small for a ${where}`);
  const raw = await readAt(disk, lba * ss, ss, label, `the ${where}`);
  const dv = view(raw);
  if (Buffer.from(raw.subarray(0, 8)).toString('latin1') !== GPT_SIGNATURE) fail(label, `${where} at LBA ${lba} has no "EFI PART" signature`);
  const headerSize = dv.getUint32(12, true);
  if (headerSize < 92 || headerSize > ss) fail(label, `${where} size ${headerSize} is not in 92..${ss}`);
  const crc = dv.getUint32(16, true);
  const copy = Buffer.from(raw.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== crc) fail(label, `${where} CRC32 mismatch`);
  const myLba = u64(dv, 24, label, 'header LBA');
  if (myLba !== lba) fail(label, `${where} says it is at LBA ${myLba}, found at LBA ${lba}`);
  const firstUsable = u64(dv, 40, label, 'first usable LBA');
  const lastUsable = u64(dv, 48, label, 'last usable LBA');
  const sectors = Math.floor(disk.size / ss);
  if (firstUsable > lastUsable || lastUsable >= sectors) {
    fail(label, `${where} usable range ${firstUsable}..${lastUsable} does not fit the disk (${sectors} sectors)`);
  }
  const entriesLba = u64(dv, 72, label, 'entry array LBA');
  const entryCount = dv.getUint32(80, true);
  const entrySize = dv.getUint32(84, true);
  if (entrySize < 128 || entrySize % 8 !== 0 || entrySize > 4096) fail(label, `${where} entry size ${entrySize} is invalid`);
  if (entryCount * entrySize > MAX_GPT_ENTRY_BYTES) fail(label, `${where} entry array of ${entryCount} x ${entrySize} bytes is too large`);
  if (entriesLba < 2 && lba === 1) fail(label, `${where} entry array at LBA ${entriesLba} overlaps the header`);
  return {
    myLba,
    firstUsable,
    lastUsable,
    diskGuid: guid(raw.subarray(56, 72)),
    entriesLba,
    entryCount,
    entrySize,
    entriesCrc: dv.getUint32(88, true),
  };
}

async function readGptEntries(disk: ReadableDisk, ss: number, h: GptHeader, label: string): Promise<Uint8Array> {
  const bytes = h.entryCount * h.entrySize;
  const entries = await readAt(disk, h.entriesLba * ss, bytes, label, 'the GPT entry array');
  if (crc32(entries) !== h.entriesCrc) fail(label, 'GPT entry array CRC32 mismatch');
  return entries;
}

/** A GPT GUID in its text form (the first three fields are little-endian). */
function guid(b: Uint8Array): string {
  const hex = (from: number, to: number, rev: boolean): string => {
    const part = Array.from(b.subarray(from, to), (x) => x.toString(16).padStart(2, '0'));
    return (rev ? part.reverse() : part).join('');
  };
  return `${hex(0, 4, true)}-${hex(4, 6, true)}-${hex(6, 8, true)}-${hex(8, 10, false)}-${hex(10, 16, false)}`;
}
