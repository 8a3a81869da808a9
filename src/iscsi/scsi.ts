/**
 * The SCSI block target (SPC-4 / SBC-3) over one rebound BlockDevice: each LUN of an iSCSI target is
 * a `LogicalUnit`, and `execute()` runs one CDB against it.
 *
 * Design notes:
 *  - Transport-free: a command gets its CDB and its Data-Out bytes (gathered by the connection
 *    with immediate data, unsolicited Data-Out and R2Ts) and answers a status, Data-In bytes and
 *    sense. Lengths the CDB implies are computed here; the connection compares them with the
 *    initiator's Expected Data Transfer Length and reports residuals.
 *  - CDB fields are read with fixed offsets; 64-bit LBAs are BigInts and every range is checked
 *    against the capacity in BigInt before it becomes a byte offset, so no CDB can throw or
 *    address outside the disk. Failures are `ScsiError`s (sense.ts); device failures go through
 *    error-map.ts. Nothing here throws anything else on peer input.
 *  - Logical block size is 512 bytes (or the device's minimum alignment if larger); a disk whose
 *    size is not a multiple exposes the whole blocks only. Transfers are capped at
 *    MAX_TRANSFER_BYTES (VPD B0 MAXIMUM TRANSFER LENGTH), which bounds a command's memory.
 *  - Identity: the VPD 0x83 NAA (type 6, locally assigned OUI) and the 0x80 serial are a hash of
 *    the catalog entry's name, so the same disk has the same id across restarts and two disks never
 *    share one (Windows merges disks with equal ids).
 *  - Write cache: WCE=1 (the overlay makes writes stable on flush); SYNCHRONIZE CACHE flushes;
 *    FUA writes are FUA (or write + flush on devices without it).
 *  - Thin provisioning (LBPME, UNMAP, WRITE SAME with UNMAP, VPD B2, GET LBA STATUS) is reported only
 *    when the device can trim. LBPRZ is 0: a trimmed range may read as its base data.
 *  - Persistent reservations (reservations.ts) belong to the disk, not to this session's unit: the
 *    server hands every unit of the same catalog entry the same table; a command outside what the
 *    reservation allows its nexus is answered RESERVATION CONFLICT before it runs.
 */
import crypto from 'node:crypto';
import type { BlockDevice, Capabilities } from '../blockdev/types.js';
import { BufferPool } from '../util/buffer-pool.js';
import { allocShortLived, SLAB_MAX_BUFFER } from '../util/slab-buffers.js';
import { toScsiError } from './error-map.js';
import { PersistentReservations, ReservationConflict, type Nexus } from './reservations.js';
import {
  Asc,
  buildSense,
  invalidCdb,
  invalidOpcode,
  invalidParam,
  lbaOutOfRange,
  ScsiError,
  SenseKey,
  Status,
  writeProtected,
  type SenseFields,
} from './sense.js';

export const MAX_TRANSFER_BYTES = 32 * 1024 * 1024;
const MAX_WRITE_SAME_BYTES = 1024 * 1024 * 1024;
const MAX_UNMAP_DESCRIPTORS = 256;
const MAX_UNMAP_BLOCKS = 1024 * 1024;
const MAX_COMPARE_AND_WRITE_BLOCKS = 128;
const VENDOR = 'REBOUND ';
const PRODUCT = 'rebound disk    ';
const REVISION = '0001';

export interface LogicalUnitInfo {
  /** Catalog entry name (stable identity). */
  id: string;
  device: BlockDevice;
  capabilities: Capabilities;
  /** Target IQN, for VPD 0x83's target port designator. */
  targetName: string;
  /** The disk's persistent reservations, shared by every nexus that reaches it (default: its own). */
  reservations?: PersistentReservations;
}

export class LogicalUnit {
  readonly id: string;
  readonly device: BlockDevice;
  readonly caps: Capabilities;
  readonly blockSize: number;
  readonly blocks: bigint;
  readonly writable: boolean;
  readonly thin: boolean;
  readonly targetName: string;
  readonly reservations: PersistentReservations;
  readonly #naa: Buffer;
  readonly #serial: string;

  constructor(info: LogicalUnitInfo) {
    this.id = info.id;
    this.device = info.device;
    this.caps = info.capabilities;
    this.blockSize = Math.max(512, info.capabilities.blockSize.min);
    this.blocks = BigInt(Math.floor(info.device.size / this.blockSize));
    this.writable = info.capabilities.canWrite;
    this.thin = info.capabilities.canTrim && this.writable;
    this.targetName = info.targetName;
    this.reservations = info.reservations ?? new PersistentReservations();
    const h = crypto.createHash('sha256').update('rebound-lun\0' + info.id).digest();
    // NAA 6 (IEEE Registered Extended): NAA nibble, 24-bit OUI (a locally assigned one), 100 bits of hash.
    const naa = Buffer.from(h.subarray(0, 16));
    naa[0] = 0x60 | 0x0;
    naa[1] = 0x01;
    naa[2] = 0x40; // OUI 0x001405-like shape: 0x0_014_0_xx (hash bits follow)
    naa[3] = (naa[3]! & 0x0f) | 0x50;
    this.#naa = naa;
    this.#serial = h.subarray(16, 28).toString('hex');
  }

  #lock: Promise<unknown> = Promise.resolve();

  /** Runs `fn` after every earlier exclusive operation of this unit has finished. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn, fn);
    this.#lock = run.catch(() => undefined);
    return run;
  }

  get naa(): Buffer {
    return this.#naa;
  }

  get serial(): string {
    return this.#serial;
  }

  get maxTransferBlocks(): number {
    return Math.floor(Math.min(MAX_TRANSFER_BYTES, this.caps.blockSize.max) / this.blockSize);
  }
}

export interface ScsiRequest {
  cdb: Buffer;
  /** Data-Out bytes the initiator sent (possibly fewer or more than the CDB implies). */
  dataOut?: Buffer | undefined;
  signal?: AbortSignal;
}

export interface ScsiResult {
  status: number;
  /** Data-In (already cut to the CDB's allocation length). */
  data?: Buffer;
  /** Sense data for CHECK CONDITION. */
  sense?: Buffer;
}

/** Task-level state the SCSI layer reads and sets: the sense REQUEST SENSE reports. */
export interface NexusState {
  /** Sense of the last CHECK CONDITION (SPC: REQUEST SENSE after autosense reports NO SENSE). */
  pendingSense?: SenseFields | undefined;
  /** The I_T nexus (persistent reservations); absent: an anonymous one. */
  nexus?: Nexus;
}

const ANONYMOUS: Nexus = { id: '', initiatorName: '', isid: Buffer.alloc(6) };

/** Bytes of Data-Out a CDB asks for (for a command that carries data), or 0. Never throws. */
export function dataOutLength(cdb: Buffer, lu: LogicalUnit | undefined): number {
  const bs = lu?.blockSize ?? 512;
  switch (cdb[0]) {
    case 0x0a:
      return (cdb[4] === 0 ? 256 : cdb[4]!) * bs;
    case 0x2a:
    case 0x2e:
      return cdb.readUInt16BE(7) * bs;
    case 0xaa:
    case 0xae:
      return cdb.readUInt32BE(6) * bs;
    case 0x8a:
    case 0x8e:
      return cdb.readUInt32BE(10) * bs;
    case 0x2f:
      return (cdb[1]! >> 1) & 3 ? cdb.readUInt16BE(7) * bs : 0;
    case 0x41:
    case 0x93:
      return (cdb[1]! & 0x01) !== 0 && cdb[0] === 0x93 ? 0 : bs;
    case 0x42:
      return cdb.readUInt16BE(7);
    case 0x89:
      return 2 * cdb[13]! * bs;
    case 0x15:
      return cdb[4]!;
    case 0x55:
      return cdb.readUInt16BE(7);
    case 0x5f:
      return cdb.readUInt32BE(5);
    default:
      return 0;
  }
}

/** Runs one command against `lu` (undefined: the LUN does not exist); `luns`: the target's LUNs (REPORT LUNS). */
export async function execute(lu: LogicalUnit | undefined, req: ScsiRequest, nexus: NexusState = {}, luns: readonly number[] = []): Promise<ScsiResult> {
  const cdb = req.cdb;
  try {
    const op = cdb[0]!;
    checkControl(cdb);
    if (op === 0xa0) return good(reportLuns(cdb, luns));
    if (op === 0x12) return good(inquiry(cdb, lu));
    if (!lu) {
      if (op === 0x03) {
        const d = (cdb[1]! & 1) !== 0;
        return good(cut(buildSense({ key: SenseKey.IllegalRequest, asc: Asc.LogicalUnitNotSupported[0], ascq: Asc.LogicalUnitNotSupported[1] }, d), cdb[4]!));
      }
      throw new ScsiError(SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported, 'logical unit not supported');
    }
    if (op === 0x03) {
      const d = (cdb[1]! & 1) !== 0;
      const s = nexus.pendingSense ?? { key: SenseKey.NoSense, asc: 0, ascq: 0 };
      nexus.pendingSense = undefined;
      return good(cut(buildSense(s, d), cdb[4]!));
    }
    const who = nexus.nexus ?? ANONYMOUS;
    if (op === 0x5e) return good(cut(lu.reservations.in(cdb), cdb.readUInt16BE(7)));
    if (op === 0x5f) {
      await lu.reservations.out(who, cdb, req.dataOut);
      return good();
    }
    if (lu.reservations.conflicts(who.id, cdb)) return { status: Status.ReservationConflict };
    const data = await run(lu, op, req);
    return good(data);
  } catch (err) {
    if (err instanceof ReservationConflict) return { status: Status.ReservationConflict };
    const e = toScsiError(err);
    const fields: SenseFields = { key: e.key, asc: e.asc, ascq: e.ascq, field: e.field, information: e.information };
    return { status: Status.CheckCondition, sense: buildSense(fields) };
  }
}

function good(data?: Buffer): ScsiResult {
  return data ? { status: Status.Good, data } : { status: Status.Good };
}

function cdbLength(op: number): number {
  switch (op >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 16;
  }
}

function checkControl(cdb: Buffer): void {
  const c = cdbLength(cdb[0]!) - 1;
  if (cdb[c]! & 0x04) throw invalidCdb(c, 2); // NACA: no ACA support
}

function cut(b: Buffer, alloc: number): Buffer {
  return b.length > alloc ? b.subarray(0, alloc) : b;
}

async function run(lu: LogicalUnit, op: number, req: ScsiRequest): Promise<Buffer | undefined> {
  const cdb = req.cdb;
  switch (op) {
    case 0x00: // TEST UNIT READY
      return undefined;
    case 0x1b: // START STOP UNIT
    case 0x1e: // PREVENT ALLOW MEDIUM REMOVAL
      return undefined;
    case 0x25:
      return readCapacity10(lu);
    case 0x9e: {
      const sa = cdb[1]! & 0x1f;
      if (sa === 0x10) return cut(readCapacity16(lu), cdb.readUInt32BE(10));
      if (sa === 0x12 && lu.thin) return getLbaStatus(lu, cdb, req.signal);
      throw invalidCdb(1, 4);
    }
    case 0x1a:
      return modeSense(lu, cdb, false);
    case 0x5a:
      return modeSense(lu, cdb, true);
    case 0x08:
      return read(lu, rangeOf(cdb, 6, lu), cdb, req);
    case 0x28:
    case 0xa8:
    case 0x88:
      return read(lu, rangeOf(cdb, cdbLength(op), lu), cdb, req);
    case 0x0a:
    case 0x2a:
    case 0xaa:
    case 0x8a:
    case 0x2e:
    case 0xae:
    case 0x8e:
      return write(lu, rangeOf(cdb, op === 0x0a ? 6 : cdbLength(op), lu), cdb, req);
    case 0x2f:
    case 0xaf:
    case 0x8f:
      return verify(lu, rangeOf(cdb, cdbLength(op), lu), cdb, req);
    case 0x41:
    case 0x93:
      return writeSame(lu, cdb, req);
    case 0x42:
      return unmap(lu, cdb, req);
    case 0x89:
      return compareAndWrite(lu, cdb, req);
    case 0x35:
    case 0x91: {
      rangeOf(cdb, cdbLength(op), lu);
      await lu.device.flush({ signal: req.signal });
      return undefined;
    }
    case 0x34:
    case 0x90: // PRE-FETCH: nothing to do once the range is valid; CONDITION MET is optional
      rangeOf(cdb, cdbLength(op), lu);
      return undefined;
    case 0xa3:
      if ((cdb[1]! & 0x1f) === 0x0c) return reportSupportedOpcodes(cdb);
      throw invalidCdb(1, 4);
    default:
      throw invalidOpcode();
  }
}

// ---- LBA ranges ----

interface Range {
  lba: bigint;
  blocks: number;
}

/** LBA and transfer length of a READ/WRITE/VERIFY/SYNC/PREFETCH CDB, checked against the capacity. */
function rangeOf(cdb: Buffer, len: number, lu: LogicalUnit): Range {
  let lba: bigint;
  let blocks: number;
  const op = cdb[0]!;
  if (len === 6) {
    lba = BigInt(cdb.readUIntBE(1, 3) & 0x1fffff);
    blocks = cdb[4] === 0 ? 256 : cdb[4]!;
  } else if (len === 10) {
    lba = BigInt(cdb.readUInt32BE(2));
    blocks = cdb.readUInt16BE(7);
  } else if (len === 12) {
    lba = BigInt(cdb.readUInt32BE(2));
    blocks = cdb.readUInt32BE(6);
  } else {
    lba = cdb.readBigUInt64BE(2);
    blocks = cdb.readUInt32BE(10);
  }
  if (op === 0x35 || op === 0x91 || op === 0x34 || op === 0x90) {
    // SYNCHRONIZE CACHE / PRE-FETCH: 0 blocks means "to the end of the medium".
    if (lba > lu.blocks) throw lbaOutOfRange();
    if (blocks === 0) return { lba, blocks: 0 };
  }
  if (lba + BigInt(blocks) > lu.blocks) throw lbaOutOfRange();
  return { lba, blocks };
}

function byteRange(lu: LogicalUnit, r: Range): { offset: number; length: number } {
  return { offset: Number(r.lba) * lu.blockSize, length: r.blocks * lu.blockSize };
}

function checkProtect(cdb: Buffer): void {
  if (cdb[0] !== 0x08 && cdb[0] !== 0x0a && (cdb[1]! & 0xe0) !== 0) throw invalidCdb(1, 7); // RDPROTECT/WRPROTECT/VRPROTECT: no protection information
}

async function readInto(lu: LogicalUnit, dst: Buffer, offset: number, signal?: AbortSignal): Promise<void> {
  const max = lu.caps.blockSize.max;
  for (let done = 0; done < dst.length; done += max) {
    const n = Math.min(max, dst.length - done);
    await lu.device.read(dst.subarray(done, done + n), offset + done, signal ? { signal } : {});
  }
}

const READ_BUFFERS = new BufferPool({ maxIdleBytes: 32 * 1024 * 1024 });

/**
 * Gives the data buffer of a READ's result back for reuse, once nothing refers to it any more (its
 * Data-In PDUs handed to the kernel). Buffers that did not come from a READ are ignored.
 */
export function recycleReadBuffer(data: Buffer): void {
  READ_BUFFERS.release(data);
}

async function read(lu: LogicalUnit, r: Range, cdb: Buffer, req: ScsiRequest): Promise<Buffer | undefined> {
  checkProtect(cdb);
  if (r.blocks > lu.maxTransferBlocks) throw invalidCdb(cdb[0] === 0x08 ? 4 : cdb[0] === 0x28 ? 7 : cdb[0] === 0xa8 ? 6 : 10);
  if (r.blocks === 0) return undefined;
  const { offset, length } = byteRange(lu, r);
  // Lives until the Data-In PDUs carrying it are sent; the connection then recycles large ones.
  const buf = length <= SLAB_MAX_BUFFER ? allocShortLived(length) : READ_BUFFERS.acquire(length);
  try {
    await readInto(lu, buf, offset, req.signal);
  } catch (err) {
    throw toScsiError(err);
  }
  return buf;
}

async function write(lu: LogicalUnit, r: Range, cdb: Buffer, req: ScsiRequest): Promise<undefined> {
  if (!lu.writable) throw writeProtected();
  checkProtect(cdb);
  if (r.blocks > lu.maxTransferBlocks) throw invalidCdb(cdb[0] === 0x0a ? 4 : cdb[0] === 0x2a || cdb[0] === 0x2e ? 7 : cdb[0] === 0xaa || cdb[0] === 0xae ? 6 : 10);
  if (r.blocks === 0) return undefined;
  const { offset } = byteRange(lu, r);
  const data = req.dataOut ?? Buffer.alloc(0);
  // Less Data-Out than the CDB says (iSCSI EDTL < SCSI transfer length): the whole blocks sent are
  // written, the initiator sees the rest as residual overflow (RFC 7143 §11.4.5.1, as tgt/LIO do).
  const length = Math.min(r.blocks * lu.blockSize, data.length - (data.length % lu.blockSize));
  if (length === 0) return undefined;
  const fua = cdb[0] !== 0x0a && (cdb[1]! & 0x08) !== 0;
  const max = lu.caps.blockSize.max;
  try {
    for (let done = 0; done < length; done += max) {
      const n = Math.min(max, length - done);
      await lu.device.write(data.subarray(done, done + n), offset + done, { fua: fua && lu.caps.canFua, ...(req.signal ? { signal: req.signal } : {}) });
    }
    if (fua && !lu.caps.canFua && lu.caps.canFlush) await lu.device.flush();
  } catch (err) {
    throw toScsiError(err, true);
  }
  return undefined;
}

async function verify(lu: LogicalUnit, r: Range, cdb: Buffer, req: ScsiRequest): Promise<undefined> {
  checkProtect(cdb);
  const bytchk = (cdb[1]! >> 1) & 3;
  if (bytchk === 2) throw invalidCdb(1, 2);
  if (r.blocks > lu.maxTransferBlocks) throw invalidCdb(cdb[0] === 0x2f ? 7 : cdb[0] === 0xaf ? 6 : 10);
  if (r.blocks === 0) return undefined;
  const { offset, length } = byteRange(lu, r);
  const medium = Buffer.allocUnsafe(length);
  try {
    await readInto(lu, medium, offset, req.signal);
  } catch (err) {
    throw toScsiError(err);
  }
  if (bytchk === 0) return undefined;
  const want = bytchk === 1 ? length : lu.blockSize;
  const data = req.dataOut;
  if (!data || data.length < want) throw new ScsiError(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb, 'less Data-Out than the CDB asks for');
  for (let i = 0; i < length; i++) {
    const expected = bytchk === 1 ? data[i] : data[i % lu.blockSize];
    if (medium[i] !== expected) throw new ScsiError(SenseKey.Miscompare, Asc.MiscompareDuringVerify, 'miscompare during verify', { information: i });
  }
  return undefined;
}

async function writeSame(lu: LogicalUnit, cdb: Buffer, req: ScsiRequest): Promise<undefined> {
  const sixteen = cdb[0] === 0x93;
  const lba = sixteen ? cdb.readBigUInt64BE(2) : BigInt(cdb.readUInt32BE(2));
  const blocks = sixteen ? cdb.readUInt32BE(10) : cdb.readUInt16BE(7);
  const unmapBit = (cdb[1]! & 0x08) !== 0;
  const anchor = (cdb[1]! & 0x10) !== 0;
  const ndob = sixteen && (cdb[1]! & 0x01) !== 0;
  if ((cdb[1]! & 0xe0) !== 0) throw invalidCdb(1, 7);
  if (!lu.writable) throw writeProtected();
  if (anchor) throw invalidCdb(1, 4);
  if (unmapBit && !lu.thin) throw invalidCdb(1, 3);
  if (blocks === 0) throw invalidCdb(sixteen ? 10 : 7); // WSNZ=1
  if (lba + BigInt(blocks) > lu.blocks) throw lbaOutOfRange();
  if (blocks * lu.blockSize > MAX_WRITE_SAME_BYTES) throw invalidCdb(sixteen ? 10 : 7);
  const offset = Number(lba) * lu.blockSize;
  const length = blocks * lu.blockSize;
  let block: Buffer;
  if (ndob) block = Buffer.alloc(lu.blockSize);
  else {
    if (!req.dataOut || req.dataOut.length !== lu.blockSize) throw new ScsiError(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb, 'WRITE SAME needs exactly one block of Data-Out');
    block = req.dataOut.subarray(0, lu.blockSize);
  }
  const opts = req.signal ? { signal: req.signal } : {};
  try {
    if (block.every((b) => b === 0) && lu.caps.canZero) {
      await lu.device.zero(offset, length, { noHole: !unmapBit, ...opts });
      return undefined;
    }
    const chunk = Math.min(Math.max(lu.blockSize, 1024 * 1024 - ((1024 * 1024) % lu.blockSize)), length, lu.caps.blockSize.max - (lu.caps.blockSize.max % lu.blockSize));
    const pattern = Buffer.allocUnsafe(chunk);
    for (let i = 0; i < chunk; i += lu.blockSize) block.copy(pattern, i);
    for (let done = 0; done < length; done += chunk) {
      const n = Math.min(chunk, length - done);
      await lu.device.write(pattern.subarray(0, n), offset + done, opts);
    }
  } catch (err) {
    throw toScsiError(err, true);
  }
  return undefined;
}

/**
 * COMPARE AND WRITE: reads N blocks, compares them with the first half of the Data-Out and, if equal,
 * writes the second half. Atomic against other COMPARE AND WRITEs of the unit (its lock), which is
 * what initiators use it for (VMware's ATS locking).
 */
async function compareAndWrite(lu: LogicalUnit, cdb: Buffer, req: ScsiRequest): Promise<undefined> {
  if (!lu.writable) throw writeProtected();
  if ((cdb[1]! & 0xe0) !== 0) throw invalidCdb(1, 7);
  const lba = cdb.readBigUInt64BE(2);
  const n = cdb[13]!;
  if (n > MAX_COMPARE_AND_WRITE_BLOCKS) throw invalidCdb(13);
  if (lba + BigInt(n) > lu.blocks) throw lbaOutOfRange();
  if (n === 0) {
    if (req.dataOut && req.dataOut.length > 0) throw invalidCdb(13);
    return undefined;
  }
  const len = n * lu.blockSize;
  const data = req.dataOut;
  if (!data || data.length !== 2 * len) throw new ScsiError(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb, 'COMPARE AND WRITE needs 2 x N blocks of Data-Out');
  const offset = Number(lba) * lu.blockSize;
  const fua = (cdb[1]! & 0x08) !== 0;
  return lu.exclusive(async () => {
    const medium = Buffer.allocUnsafe(len);
    try {
      await readInto(lu, medium, offset, req.signal);
    } catch (err) {
      throw toScsiError(err);
    }
    for (let i = 0; i < len; i++) {
      if (medium[i] !== data[i]) throw new ScsiError(SenseKey.Miscompare, Asc.MiscompareDuringVerify, 'miscompare during verify', { information: i });
    }
    try {
      await lu.device.write(data.subarray(len), offset, { fua: fua && lu.caps.canFua, ...(req.signal ? { signal: req.signal } : {}) });
      if (fua && !lu.caps.canFua && lu.caps.canFlush) await lu.device.flush();
    } catch (err) {
      throw toScsiError(err, true);
    }
    return undefined;
  });
}

async function unmap(lu: LogicalUnit, cdb: Buffer, req: ScsiRequest): Promise<undefined> {
  if (!lu.thin) {
    if (!lu.writable) throw writeProtected();
    throw invalidOpcode();
  }
  if (cdb[1]! & 0x01) throw invalidCdb(1, 0); // ANCHOR
  const plen = cdb.readUInt16BE(7);
  if (plen === 0) return undefined;
  const p = req.dataOut ?? Buffer.alloc(0);
  if (plen < 8 || p.length < 8) throw new ScsiError(SenseKey.IllegalRequest, Asc.ParameterListLengthError, 'UNMAP parameter list too short');
  const bdl = p.readUInt16BE(2);
  if (bdl % 16 !== 0 && bdl > 0) throw invalidParam(2);
  const count = Math.floor(Math.min(bdl, p.length - 8, plen - 8) / 16);
  if (count > MAX_UNMAP_DESCRIPTORS) throw invalidParam(2);
  const ranges: Array<{ offset: number; length: number }> = [];
  for (let i = 0; i < count; i++) {
    const d = 8 + i * 16;
    const lba = p.readBigUInt64BE(d);
    const n = p.readUInt32BE(d + 8);
    if (lba + BigInt(n) > lu.blocks) throw lbaOutOfRange();
    if (n > MAX_UNMAP_BLOCKS) throw invalidParam(d + 8);
    if (n > 0) ranges.push({ offset: Number(lba) * lu.blockSize, length: n * lu.blockSize });
  }
  try {
    for (const r of ranges) {
      const max = lu.caps.blockSize.max - (lu.caps.blockSize.max % lu.blockSize);
      for (let done = 0; done < r.length; done += max) {
        await lu.device.trim(r.offset + done, Math.min(max, r.length - done), req.signal ? { signal: req.signal } : {});
      }
    }
  } catch (err) {
    throw toScsiError(err, true);
  }
  return undefined;
}

async function getLbaStatus(lu: LogicalUnit, cdb: Buffer, signal?: AbortSignal): Promise<Buffer> {
  const lba = cdb.readBigUInt64BE(2);
  const alloc = cdb.readUInt32BE(10);
  if (lba >= lu.blocks) throw lbaOutOfRange();
  const offset = Number(lba) * lu.blockSize;
  const length = Math.min(Number(lu.blocks - lba) * lu.blockSize, 64 * 1024 * 1024);
  const descs: Buffer[] = [];
  let extents: Array<{ offset: number; length: number; hole: boolean }>;
  try {
    extents = lu.caps.canExtents ? await lu.device.extents(offset, length, signal ? { signal } : {}) : [{ offset, length, hole: false }];
  } catch (err) {
    throw toScsiError(err);
  }
  let next = lba;
  // As many descriptors as the allocation length holds (initiators size their parsing by the header).
  const room = Math.max(1, Math.min(64, Math.floor((alloc - 8) / 16)));
  for (const e of extents) {
    if (descs.length >= room) break;
    const end = BigInt(Math.floor((e.offset + e.length) / lu.blockSize));
    if (end <= next) continue;
    const d = Buffer.alloc(16);
    d.writeBigUInt64BE(next, 0);
    d.writeUInt32BE(Number(end - next > 0xffffffffn ? 0xffffffffn : end - next), 8);
    d[12] = e.hole ? 1 : 0;
    descs.push(d);
    next = end;
  }
  const h = Buffer.alloc(8);
  h.writeUInt32BE(4 + descs.length * 16, 0);
  return cut(Buffer.concat([h, ...descs]), alloc);
}

// ---- Inquiry and friends ----

function inquiry(cdb: Buffer, lu: LogicalUnit | undefined): Buffer {
  const evpd = (cdb[1]! & 0x01) !== 0;
  const page = cdb[2]!;
  const alloc = cdb.readUInt16BE(3);
  if (cdb[1]! & 0x02) throw invalidCdb(1, 1); // CmdDt (obsolete)
  if (!evpd && page !== 0) throw invalidCdb(2);
  if (!lu) {
    if (evpd) throw new ScsiError(SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported, 'logical unit not supported');
    const b = Buffer.alloc(36);
    b[0] = 0x7f; // peripheral qualifier 3, device type 0x1f: no LUN here
    b[2] = 0x06;
    b[3] = 0x02;
    b[4] = 31;
    return cut(b, alloc);
  }
  if (!evpd) return cut(standardInquiry(), alloc);
  return cut(vpd(lu, page), alloc);
}

function standardInquiry(): Buffer {
  const b = Buffer.alloc(96);
  b[0] = 0x00; // direct access block device
  b[2] = 0x06; // SPC-4
  b[3] = 0x12; // HiSup, response data format 2
  b[4] = b.length - 5;
  b[7] = 0x02; // CmdQue
  b.write(VENDOR, 8, 'ascii');
  b.write(PRODUCT, 16, 'ascii');
  b.write(REVISION, 32, 'ascii');
  // Version descriptors: SAM-5, iSCSI (RFC 7143), SPC-4, SBC-3.
  [0x00a0, 0x0960, 0x0460, 0x04c0].forEach((v, i) => b.writeUInt16BE(v, 58 + i * 2));
  return b;
}

function vpdPage(page: number, body: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h[1] = page;
  h.writeUInt16BE(body.length, 2);
  return Buffer.concat([h, body]);
}

function designator(codeSet: number, assoc: number, type: number, value: Buffer, piv = false): Buffer {
  const h = Buffer.alloc(4);
  h[0] = (piv ? 0x50 : 0) | codeSet; // protocol identifier 5 (iSCSI) when PIV
  h[1] = (piv ? 0x80 : 0) | (assoc << 4) | type;
  h[3] = value.length;
  return Buffer.concat([h, value]);
}

function scsiName(s: string): Buffer {
  const raw = Buffer.from(s, 'utf8');
  const len = (raw.length + 1 + 3) & ~3; // NUL terminated, a multiple of 4
  const b = Buffer.alloc(len);
  raw.copy(b);
  return b;
}

function vpd(lu: LogicalUnit, page: number): Buffer {
  switch (page) {
    case 0x00:
      return vpdPage(0x00, Buffer.from(lu.thin ? [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2] : [0x00, 0x80, 0x83, 0xb0, 0xb1]));
    case 0x80:
      return vpdPage(0x80, Buffer.from(lu.serial, 'ascii'));
    case 0x83: {
      const rtp = Buffer.alloc(4);
      rtp.writeUInt16BE(1, 2);
      const tpg = Buffer.alloc(4);
      tpg.writeUInt16BE(1, 2);
      return vpdPage(
        0x83,
        Buffer.concat([
          designator(1, 0, 3, lu.naa), // NAA, logical unit
          designator(2, 0, 1, Buffer.from(VENDOR + lu.serial, 'ascii')), // T10 vendor id, logical unit
          designator(1, 1, 4, rtp, true), // relative target port 1
          designator(1, 1, 5, tpg, true), // target port group 1
          designator(3, 1, 8, scsiName(`${lu.targetName},t,0x0001`), true), // SCSI name string, target port
          designator(3, 2, 8, scsiName(lu.targetName), true), // SCSI name string, target device
        ]),
      );
    }
    case 0xb0: {
      const b = Buffer.alloc(0x3c);
      b[0] = 0x01; // WSNZ
      b[1] = MAX_COMPARE_AND_WRITE_BLOCKS;
      b.writeUInt16BE(Math.max(1, Math.floor(lu.caps.blockSize.preferred / lu.blockSize)), 2); // optimal transfer length granularity
      b.writeUInt32BE(lu.maxTransferBlocks, 4);
      b.writeUInt32BE(lu.maxTransferBlocks, 8); // optimal transfer length
      if (lu.thin) {
        b.writeUInt32BE(Math.min(MAX_UNMAP_BLOCKS, Math.floor(MAX_WRITE_SAME_BYTES / lu.blockSize)), 16); // maximum unmap LBA count
        b.writeUInt32BE(MAX_UNMAP_DESCRIPTORS, 20);
        b.writeUInt32BE(Math.max(1, Math.floor(lu.caps.blockSize.preferred / lu.blockSize)), 24); // optimal unmap granularity
      }
      b.writeBigUInt64BE(BigInt(Math.floor(MAX_WRITE_SAME_BYTES / lu.blockSize)), 32); // maximum write same length
      return vpdPage(0xb0, b);
    }
    case 0xb1: {
      const b = Buffer.alloc(0x3c);
      b.writeUInt16BE(1, 0); // non-rotating medium
      return vpdPage(0xb1, b);
    }
    case 0xb2:
      if (lu.thin) {
        const b = Buffer.alloc(4);
        b[1] = 0x80 | 0x40 | 0x20; // LBPU, LBPWS, LBPWS10
        b[2] = 0x02; // thin provisioned
        return vpdPage(0xb2, b);
      }
      throw invalidCdb(2);
    default:
      throw invalidCdb(2);
  }
}

function readCapacity10(lu: LogicalUnit): Buffer {
  const b = Buffer.alloc(8);
  const last = lu.blocks - 1n;
  b.writeUInt32BE(last > 0xffffffffn ? 0xffffffff : Number(last < 0n ? 0n : last), 0);
  b.writeUInt32BE(lu.blockSize, 4);
  return b;
}

function readCapacity16(lu: LogicalUnit): Buffer {
  const b = Buffer.alloc(32);
  b.writeBigUInt64BE(lu.blocks > 0n ? lu.blocks - 1n : 0n, 0);
  b.writeUInt32BE(lu.blockSize, 8);
  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT stays 0: the preferred I/O size is in VPD B0 (optimal
  // transfer length granularity); a 4K "physical" block would only make initiators read-modify-write.
  if (lu.thin) b[14] = 0x80; // LBPME (LBPRZ 0)
  return b;
}

function reportLuns(cdb: Buffer, luns: readonly number[]): Buffer {
  const alloc = cdb.readUInt32BE(6);
  if (alloc < 16) throw invalidCdb(6);
  const select = cdb[2]!;
  if (select > 2 && select !== 0x10 && select !== 0x11 && select !== 0x12) throw invalidCdb(2);
  const list = Buffer.alloc(8 + luns.length * 8);
  list.writeUInt32BE(luns.length * 8, 0);
  luns.forEach((n, i) => {
    if (n < 256) list[8 + i * 8 + 1] = n;
    else {
      list[8 + i * 8] = 0x40 | ((n >> 8) & 0x3f);
      list[8 + i * 8 + 1] = n & 0xff;
    }
  });
  return cut(list, alloc);
}

// ---- MODE SENSE ----

function cachingPage(lu: LogicalUnit, pc: number): Buffer {
  const p = Buffer.alloc(20);
  p[0] = 0x08;
  p[1] = 0x12;
  if (pc !== 1 && lu.writable) p[2] = 0x04; // WCE
  return p;
}

function controlPage(pc: number): Buffer {
  const p = Buffer.alloc(12);
  p[0] = 0x0a;
  p[1] = 0x0a;
  if (pc !== 1) {
    p[3] = 0x10; // queue algorithm modifier 1 (unrestricted reordering)
    p.writeUInt16BE(0xffff, 8); // busy timeout period: unlimited
  }
  return p;
}

function informationalExceptionsPage(): Buffer {
  const p = Buffer.alloc(12);
  p[0] = 0x1c;
  p[1] = 0x0a;
  return p;
}

function modeSense(lu: LogicalUnit, cdb: Buffer, ten: boolean): Buffer {
  const dbd = (cdb[1]! & 0x08) !== 0;
  const llbaa = ten && (cdb[1]! & 0x10) !== 0;
  const pc = cdb[2]! >> 6;
  const page = cdb[2]! & 0x3f;
  const subpage = cdb[3]!;
  const alloc = ten ? cdb.readUInt16BE(7) : cdb[4]!;
  if (pc === 3) throw new ScsiError(SenseKey.IllegalRequest, Asc.SavingParametersNotSupported, 'saving parameters not supported', { field: { cdb: true, byte: 2, bit: 7 } });
  if (subpage !== 0 && !(page === 0x3f && subpage === 0xff)) throw invalidCdb(3);
  const pages: Buffer[] = [];
  if (page === 0x08 || page === 0x3f) pages.push(cachingPage(lu, pc));
  if (page === 0x0a || page === 0x3f) pages.push(controlPage(pc));
  if (page === 0x1c || page === 0x3f) pages.push(informationalExceptionsPage());
  if (pages.length === 0) throw invalidCdb(2, 5);
  const bd = dbd ? Buffer.alloc(0) : blockDescriptor(lu, llbaa);
  const body = Buffer.concat(pages);
  const devSpecific = (lu.writable ? 0 : 0x80) | 0x10; // WP, DPOFUA
  let h: Buffer;
  if (ten) {
    h = Buffer.alloc(8);
    h.writeUInt16BE(6 + bd.length + body.length, 0);
    h[3] = devSpecific;
    if (llbaa && bd.length > 0) h[4] = 0x01;
    h.writeUInt16BE(bd.length, 6);
  } else {
    h = Buffer.alloc(4);
    h[0] = Math.min(255, 3 + bd.length + body.length);
    h[2] = devSpecific;
    h[3] = bd.length;
  }
  return cut(Buffer.concat([h, bd, body]), alloc);
}

function blockDescriptor(lu: LogicalUnit, long: boolean): Buffer {
  if (long) {
    const b = Buffer.alloc(16);
    b.writeBigUInt64BE(lu.blocks, 0);
    b.writeUInt32BE(lu.blockSize, 12);
    return b;
  }
  const b = Buffer.alloc(8);
  b.writeUInt32BE(lu.blocks > 0xffffffffn ? 0xffffffff : Number(lu.blocks), 0);
  b.writeUIntBE(lu.blockSize, 5, 3);
  return b;
}

// ---- REPORT SUPPORTED OPERATION CODES ----

interface OpInfo {
  op: number;
  sa?: number;
  len: number;
}

const SUPPORTED: readonly OpInfo[] = [
  { op: 0x00, len: 6 },
  { op: 0x03, len: 6 },
  { op: 0x08, len: 6 },
  { op: 0x0a, len: 6 },
  { op: 0x12, len: 6 },
  { op: 0x1a, len: 6 },
  { op: 0x1b, len: 6 },
  { op: 0x1e, len: 6 },
  { op: 0x25, len: 10 },
  { op: 0x28, len: 10 },
  { op: 0x2a, len: 10 },
  { op: 0x2e, len: 10 },
  { op: 0x2f, len: 10 },
  { op: 0x34, len: 10 },
  { op: 0x35, len: 10 },
  { op: 0x41, len: 10 },
  { op: 0x42, len: 10 },
  { op: 0x5a, len: 10 },
  ...[0, 1, 2, 3].map((sa) => ({ op: 0x5e, sa, len: 10 })),
  ...[0, 1, 2, 3, 4, 5, 6].map((sa) => ({ op: 0x5f, sa, len: 10 })),
  { op: 0x88, len: 16 },
  { op: 0x89, len: 16 },
  { op: 0x8a, len: 16 },
  { op: 0x8e, len: 16 },
  { op: 0x8f, len: 16 },
  { op: 0x90, len: 16 },
  { op: 0x91, len: 16 },
  { op: 0x93, len: 16 },
  { op: 0x9e, sa: 0x10, len: 16 },
  { op: 0x9e, sa: 0x12, len: 16 },
  { op: 0xa0, len: 12 },
  { op: 0xa3, sa: 0x0c, len: 12 },
  { op: 0xa8, len: 12 },
  { op: 0xaa, len: 12 },
  { op: 0xae, len: 12 },
  { op: 0xaf, len: 12 },
];

function usage(o: OpInfo): Buffer {
  const b = Buffer.alloc(o.len, 0xff);
  b[0] = o.op;
  if (o.sa !== undefined) b[1] = 0x1f & 0xff;
  b[o.len - 1] = 0x04 ^ 0x04; // control byte: no NACA, no vendor bits
  return b;
}

function reportSupportedOpcodes(cdb: Buffer): Buffer {
  const options = cdb[2]! & 0x07;
  const rctd = (cdb[2]! & 0x80) !== 0;
  const reqOp = cdb[3]!;
  const reqSa = cdb.readUInt16BE(4);
  const alloc = cdb.readUInt32BE(6);
  const timeouts = (): Buffer => {
    const t = Buffer.alloc(12);
    t.writeUInt16BE(10, 0);
    return t;
  };
  if (options === 0) {
    const descs = SUPPORTED.map((o) => {
      const d = Buffer.alloc(8);
      d[0] = o.op;
      d.writeUInt16BE(o.sa ?? 0, 2);
      d[5] = (o.sa !== undefined ? 0x01 : 0) | (rctd ? 0x02 : 0);
      d.writeUInt16BE(o.len, 6);
      return rctd ? Buffer.concat([d, timeouts()]) : d;
    });
    const body = Buffer.concat(descs);
    const h = Buffer.alloc(4);
    h.writeUInt32BE(body.length, 0);
    return cut(Buffer.concat([h, body]), alloc);
  }
  if (options > 3) throw invalidCdb(2, 2);
  const hasSa = SUPPORTED.some((o) => o.op === reqOp && o.sa !== undefined);
  if (options === 1 && hasSa) throw invalidCdb(3);
  if (options === 2 && !hasSa && SUPPORTED.some((o) => o.op === reqOp)) throw invalidCdb(4);
  const found = SUPPORTED.find((o) => o.op === reqOp && (options === 1 || (options === 3 && !hasSa) ? o.sa === undefined : o.sa === reqSa));
  const h = Buffer.alloc(4);
  if (!found) {
    h[1] = 0x01; // not supported
    return cut(h, alloc);
  }
  h[1] = 0x03 | (rctd ? 0x80 : 0);
  const u = usage(found);
  h.writeUInt16BE(u.length, 2);
  return cut(Buffer.concat([h, u, rctd ? timeouts() : Buffer.alloc(0)]), alloc);
}
