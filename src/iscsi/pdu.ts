/**
 * The iSCSI PDU codec (RFC 7143 §11): framing of the Basic Header Segment (48 bytes), Additional
 * Header Segments, header and data digests (CRC32C) and the padded data segment, plus builders for
 * every PDU the target sends.
 *
 * Design notes:
 *  - Decoding never throws on what a peer sent: `parseBhs` only reads fixed offsets of a 48-byte
 *    buffer, `frameLengths` computes what follows from the header and the negotiated limits and
 *    answers a typed failure (`PduError`) for lengths beyond them; `decodePdu` (the pure decoder the
 *    fuzz target and the unit tests drive) and `readPdu` (the connection's reader) both use them.
 *    A `PduError` is a protocol violation: the connection answers it with a Reject or a close.
 *  - Digests are per connection and switch on after login (the login phase always runs without).
 *  - Builders take the fields of one PDU and give the BHS; `encodePdu` adds the data segment,
 *    padding and digests and patches DataSegmentLength, so no builder can get it wrong.
 */
import type { ByteReader } from '../nbd/byte-reader.js';

export const BHS_LENGTH = 48;
/** The reserved tag: "no task" (ITT) or "no transfer" (TTT). */
export const RESERVED_TAG = 0xffffffff;

export const Op = {
  NopOut: 0x00,
  ScsiCommand: 0x01,
  TaskMgmt: 0x02,
  Login: 0x03,
  Text: 0x04,
  DataOut: 0x05,
  Logout: 0x06,
  Snack: 0x10,
  NopIn: 0x20,
  ScsiResponse: 0x21,
  TaskMgmtResponse: 0x22,
  LoginResponse: 0x23,
  TextResponse: 0x24,
  DataIn: 0x25,
  LogoutResponse: 0x26,
  R2T: 0x31,
  Async: 0x32,
  Reject: 0x3f,
} as const;

export const RejectReason = {
  DataDigestError: 0x02,
  SnackReject: 0x03,
  ProtocolError: 0x04,
  CommandNotSupported: 0x05,
  ImmediateCommandReject: 0x06,
  TaskInProgress: 0x07,
  InvalidDataAck: 0x08,
  InvalidPduField: 0x09,
  LongOperationReject: 0x0a,
  WaitingForLogout: 0x0c,
} as const;

/** A malformed or oversized PDU: the connection answers with a Reject (`reason`) or closes. */
export class PduError extends Error {
  readonly reason: number;
  /** The header could not be trusted (framing lost): the connection must close. */
  readonly fatal: boolean;
  /** The BHS of the PDU at fault, when it was framed (what a Reject carries back). */
  readonly header: Buffer | undefined;
  constructor(message: string, reason: number = RejectReason.ProtocolError, fatal = true, header?: Buffer) {
    super(message);
    this.header = header;
    this.name = 'PduError';
    this.reason = reason;
    this.fatal = fatal;
  }
}

/** The fields every PDU has at the same offsets. */
export interface Bhs {
  readonly raw: Buffer;
  readonly opcode: number;
  readonly immediate: boolean;
  /** Byte 1 (F bit and opcode-specific flags). */
  readonly flags: number;
  readonly final: boolean;
  /** TotalAHSLength in bytes. */
  readonly ahsLength: number;
  readonly dataLength: number;
  readonly itt: number;
}

export function parseBhs(raw: Buffer): Bhs {
  if (raw.length < BHS_LENGTH) throw new RangeError('a BHS is 48 bytes'); // a caller's bug, never a peer's
  return {
    raw,
    opcode: raw[0]! & 0x3f,
    immediate: (raw[0]! & 0x40) !== 0,
    flags: raw[1]!,
    final: (raw[1]! & 0x80) !== 0,
    ahsLength: raw[4]! * 4,
    dataLength: raw.readUIntBE(5, 3),
    itt: raw.readUInt32BE(16),
  };
}

export interface Pdu extends Bhs {
  /** The AHS bytes (TotalAHSLength*4), possibly empty. */
  readonly ahs: Buffer;
  /** The data segment without padding. */
  readonly data: Buffer;
}

export interface DigestOptions {
  headerDigest: boolean;
  dataDigest: boolean;
}

export interface FrameLimits extends DigestOptions {
  /** Our MaxRecvDataSegmentLength: a longer data segment is a protocol error. */
  maxDataLength: number;
}

export const NO_DIGESTS: DigestOptions = { headerDigest: false, dataDigest: false };

/** Bytes that follow the BHS: AHS, header digest, data + pad, data digest. */
export function frameLengths(h: Bhs, limits: FrameLimits): { rest: number; error?: PduError } {
  if (h.dataLength > limits.maxDataLength) {
    return { rest: 0, error: new PduError(`data segment of ${h.dataLength} bytes exceeds MaxRecvDataSegmentLength ${limits.maxDataLength}`) };
  }
  const pad = (4 - (h.dataLength % 4)) % 4;
  const rest = h.ahsLength + (limits.headerDigest ? 4 : 0) + h.dataLength + pad + (limits.dataDigest && h.dataLength > 0 ? 4 : 0);
  return { rest };
}

/** Checks digests and cuts AHS and data out of the bytes after the BHS. */
function assemble(h: Bhs, rest: Buffer, limits: FrameLimits): Pdu {
  let off = 0;
  const ahs = rest.subarray(0, h.ahsLength);
  off += h.ahsLength;
  if (limits.headerDigest) {
    const want = rest.readUInt32LE(off);
    const got = crc32c(ahs, crc32c(h.raw));
    if (got !== want) throw new PduError('header digest error');
    off += 4;
  }
  const data = rest.subarray(off, off + h.dataLength);
  off += h.dataLength + ((4 - (h.dataLength % 4)) % 4);
  if (limits.dataDigest && h.dataLength > 0) {
    const padded = rest.subarray(h.ahsLength + (limits.headerDigest ? 4 : 0), off);
    if (crc32c(padded) !== rest.readUInt32LE(off)) throw new PduError('data digest error', RejectReason.DataDigestError, false, h.raw);
  }
  return { raw: h.raw, opcode: h.opcode, immediate: h.immediate, flags: h.flags, final: h.final, ahsLength: h.ahsLength, dataLength: h.dataLength, itt: h.itt, ahs, data };
}

export type DecodeResult =
  | { ok: true; pdu: Pdu; consumed: number }
  | { ok: false; need: number }
  | { ok: false; error: PduError };

/** Decodes one PDU at the start of `buf` (pure; for tests and the fuzz target). */
export function decodePdu(buf: Buffer, limits: FrameLimits): DecodeResult {
  if (buf.length < BHS_LENGTH) return { ok: false, need: BHS_LENGTH };
  const h = parseBhs(buf.subarray(0, BHS_LENGTH));
  const { rest, error } = frameLengths(h, limits);
  if (error) return { ok: false, error };
  if (buf.length < BHS_LENGTH + rest) return { ok: false, need: BHS_LENGTH + rest };
  try {
    return { ok: true, pdu: assemble(h, buf.subarray(BHS_LENGTH, BHS_LENGTH + rest), limits), consumed: BHS_LENGTH + rest };
  } catch (err) {
    if (err instanceof PduError) return { ok: false, error: err };
    throw err;
  }
}

const EMPTY = Buffer.alloc(0);

/** Reads one PDU from a connection. Rejects with PduError, or ConnectionClosed from the reader. */
export async function readPdu(reader: ByteReader, limits: FrameLimits): Promise<Pdu> {
  const raw = Buffer.from(await reader.readExact(BHS_LENGTH)); // a copy: the BHS outlives the chunk
  const h = parseBhs(raw);
  const { rest, error } = frameLengths(h, limits);
  if (error) throw error;
  const tail = rest > 0 ? await reader.readExact(rest) : EMPTY;
  return assemble(h, tail, limits);
}

/**
 * The next PDU: at once when all of it has arrived (the common case under load: many PDUs per socket
 * read), else through readPdu. Throws (or rejects with) PduError as readPdu does.
 */
export function nextPdu(reader: ByteReader, limits: FrameLimits): Pdu | Promise<Pdu> {
  const head = reader.tryTake(BHS_LENGTH);
  if (!head) return readPdu(reader, limits);
  const h = parseBhs(Buffer.from(head)); // a copy: the BHS outlives the chunk
  const { rest, error } = frameLengths(h, limits);
  if (error) throw error;
  const tail = rest > 0 ? reader.tryTake(rest) : EMPTY;
  if (tail) return assemble(h, tail, limits);
  return reader.readExact(rest).then((t) => assemble(h, t, limits));
}

/** The wire form of a PDU: BHS (DataSegmentLength patched), header digest, data, pad, data digest. */
export function encodePdu(bhs: Buffer, data: Uint8Array | undefined, digests: DigestOptions): Buffer[] {
  const len = data?.length ?? 0;
  bhs.writeUIntBE(len, 5, 3);
  const out: Buffer[] = [bhs];
  if (digests.headerDigest) out.push(u32le(crc32c(bhs)));
  if (len > 0) {
    const d = Buffer.isBuffer(data) ? data : Buffer.from(data!.buffer, data!.byteOffset, data!.byteLength);
    out.push(d);
    const pad = (4 - (len % 4)) % 4;
    const padBuf = pad > 0 ? Buffer.alloc(pad) : undefined;
    if (padBuf) out.push(padBuf);
    if (digests.dataDigest) out.push(u32le(crc32c(padBuf ? padBuf : Buffer.alloc(0), crc32c(d))));
  }
  return out;
}

function u32le(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

// ---- CRC32C (Castagnoli), as iSCSI digests use it: reflected, init and final xor 0xffffffff. ----

const CRC_TABLES = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[0]![i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) t[s]![i] = (t[s - 1]![i]! >>> 8) ^ t[0]![t[s - 1]![i]! & 0xff]!;
  }
  return t;
})();

/** CRC32C of `buf`, continuing from `prev` (the result of an earlier call) when given. */
export function crc32c(buf: Uint8Array, prev = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC_TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let c = ~prev >>> 0;
  let i = 0;
  const n = buf.length;
  for (; i + 8 <= n; i += 8) {
    const a = (c ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24))) >>> 0;
    c =
      t7[a & 0xff]! ^ t6[(a >>> 8) & 0xff]! ^ t5[(a >>> 16) & 0xff]! ^ t4[a >>> 24]! ^
      t3[buf[i + 4]!]! ^ t2[buf[i + 5]!]! ^ t1[buf[i + 6]!]! ^ t0[buf[i + 7]!]!;
  }
  for (; i < n; i++) c = t0[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

// ---- Fields of initiator PDUs ----

export function lunField(raw: Buffer): Buffer {
  return raw.subarray(8, 16);
}

/** The LUN number of an 8-byte LUN field (peripheral or flat addressing); -1 for other forms. */
export function decodeLun(f: Buffer): number {
  const method = f[0]! >> 6;
  if (method === 0 && f[0] === 0) return f[1]!;
  if (method === 1) return ((f[0]! & 0x3f) << 8) | f[1]!;
  return -1;
}

export function encodeLun(lun: number): Buffer {
  const b = Buffer.alloc(8);
  if (lun < 256) b[1] = lun;
  else {
    b[0] = 0x40 | ((lun >> 8) & 0x3f);
    b[1] = lun & 0xff;
  }
  return b;
}

/** What a SCSI Command PDU carries (RFC 7143 §11.3). */
export interface ScsiCommandFields {
  read: boolean;
  write: boolean;
  attr: number;
  lun: Buffer;
  expectedLength: number;
  cmdSN: number;
  expStatSN: number;
  /** The whole CDB: the 16 bytes of the BHS plus an Extended CDB AHS. */
  cdb: Buffer;
}

export function scsiCommandFields(p: Pdu): ScsiCommandFields | PduError {
  let cdb = p.raw.subarray(32, 48);
  // AHS: 2-byte length, 1-byte type, then data (length counts from the reserved byte on).
  let off = 0;
  while (off + 4 <= p.ahs.length) {
    const len = p.ahs.readUInt16BE(off);
    const type = p.ahs[off + 2]!;
    const end = off + 3 + len;
    if (end > p.ahs.length || len < 1) return new PduError('AHS length beyond TotalAHSLength', RejectReason.InvalidPduField, false);
    if (type === 1) cdb = Buffer.concat([cdb, p.ahs.subarray(off + 4, end)]);
    off = end + ((4 - (end % 4)) % 4);
  }
  return {
    read: (p.flags & 0x40) !== 0,
    write: (p.flags & 0x20) !== 0,
    attr: p.flags & 0x07,
    lun: lunField(p.raw),
    expectedLength: p.raw.readUInt32BE(20),
    cmdSN: p.raw.readUInt32BE(24),
    expStatSN: p.raw.readUInt32BE(28),
    cdb,
  };
}

// ---- Builders of target PDUs. Sequence numbers are filled in by the connection's sender. ----

function bhs(opcode: number, flags: number, itt: number): Buffer {
  // From Node's shared pool (Buffer.alloc is one malloc per header: one per PDU sent).
  const b = Buffer.allocUnsafe(BHS_LENGTH).fill(0);
  b[0] = opcode;
  b[1] = flags;
  b.writeUInt32BE(itt >>> 0, 16);
  return b;
}

/** Offsets of StatSN / ExpCmdSN / MaxCmdSN, the same in every target PDU that has them. */
export const STATSN_OFFSET = 24;
export const EXPCMDSN_OFFSET = 28;
export const MAXCMDSN_OFFSET = 32;

export interface LoginResponseFields {
  transit: boolean;
  cont: boolean;
  csg: number;
  nsg: number;
  isid: Buffer;
  tsih: number;
  itt: number;
  statusClass: number;
  statusDetail: number;
}

export function loginResponse(f: LoginResponseFields): Buffer {
  const b = bhs(Op.LoginResponse, (f.transit ? 0x80 : 0) | (f.cont ? 0x40 : 0) | ((f.csg & 3) << 2) | (f.nsg & 3), f.itt);
  b[2] = 0x00; // Version-max
  b[3] = 0x00; // Version-active
  f.isid.copy(b, 8, 0, 6);
  b.writeUInt16BE(f.tsih, 14);
  b[36] = f.statusClass;
  b[37] = f.statusDetail;
  return b;
}

export function textResponse(itt: number, final: boolean, cont: boolean, ttt: number, lun: Buffer): Buffer {
  const b = bhs(Op.TextResponse, (final ? 0x80 : 0) | (cont ? 0x40 : 0), itt);
  lun.copy(b, 8);
  b.writeUInt32BE(ttt >>> 0, 20);
  return b;
}

export function nopIn(itt: number, ttt: number, lun: Buffer): Buffer {
  const b = bhs(Op.NopIn, 0x80, itt);
  lun.copy(b, 8);
  b.writeUInt32BE(ttt >>> 0, 20);
  return b;
}

export interface ScsiResponseFields {
  itt: number;
  status: number;
  /** 0 command completed at target, 1 target failure. */
  response?: number;
  overflow?: number;
  underflow?: number;
  expDataSN?: number;
}

export function scsiResponse(f: ScsiResponseFields): Buffer {
  let flags = 0x80;
  let residual = 0;
  if (f.overflow) {
    flags |= 0x04;
    residual = f.overflow;
  } else if (f.underflow) {
    flags |= 0x02;
    residual = f.underflow;
  }
  const b = bhs(Op.ScsiResponse, flags, f.itt);
  b[2] = f.response ?? 0;
  b[3] = f.status;
  b.writeUInt32BE((f.expDataSN ?? 0) >>> 0, 36);
  b.writeUInt32BE(residual >>> 0, 44);
  return b;
}

export interface DataInFields {
  itt: number;
  lun: Buffer;
  final: boolean;
  dataSN: number;
  offset: number;
  /** Phase collapse: the status travels in this (final) Data-In. */
  status?: number;
  overflow?: number;
  underflow?: number;
}

export function dataIn(f: DataInFields): Buffer {
  let flags = f.final ? 0x80 : 0;
  const b = bhs(Op.DataIn, 0, f.itt);
  if (f.status !== undefined) {
    flags |= 0x01;
    b[3] = f.status;
    if (f.overflow) {
      flags |= 0x04;
      b.writeUInt32BE(f.overflow >>> 0, 44);
    } else if (f.underflow) {
      flags |= 0x02;
      b.writeUInt32BE(f.underflow >>> 0, 44);
    }
  }
  b[1] = flags;
  f.lun.copy(b, 8);
  b.writeUInt32BE(RESERVED_TAG, 20);
  b.writeUInt32BE(f.dataSN >>> 0, 36);
  b.writeUInt32BE(f.offset >>> 0, 40);
  return b;
}

export function r2t(itt: number, lun: Buffer, ttt: number, r2tSN: number, offset: number, length: number): Buffer {
  const b = bhs(Op.R2T, 0x80, itt);
  lun.copy(b, 8);
  b.writeUInt32BE(ttt >>> 0, 20);
  b.writeUInt32BE(r2tSN >>> 0, 36);
  b.writeUInt32BE(offset >>> 0, 40);
  b.writeUInt32BE(length >>> 0, 44);
  return b;
}

export function taskMgmtResponse(itt: number, response: number): Buffer {
  const b = bhs(Op.TaskMgmtResponse, 0x80, itt);
  b[2] = response;
  return b;
}

export function logoutResponse(itt: number, response: number, time2Wait = 0, time2Retain = 0): Buffer {
  const b = bhs(Op.LogoutResponse, 0x80, itt);
  b[2] = response;
  b.writeUInt16BE(time2Wait, 40);
  b.writeUInt16BE(time2Retain, 42);
  return b;
}

export function reject(reason: number): Buffer {
  const b = bhs(Op.Reject, 0x80, RESERVED_TAG);
  b[2] = reason;
  return b;
}

export function asyncMessage(event: number, lun: Buffer, param1 = 0, param2 = 0, param3 = 0): Buffer {
  const b = bhs(Op.Async, 0x80, RESERVED_TAG);
  lun.copy(b, 8);
  b[36] = event;
  b.writeUInt16BE(param1, 38);
  b.writeUInt16BE(param2, 40);
  b.writeUInt16BE(param3, 42);
  return b;
}

// ---- Serial number arithmetic (RFC 1982, 32 bits) ----

/** a < b in serial arithmetic. */
export function snLess(a: number, b: number): boolean {
  return a !== b && ((b - a) >>> 0) < 0x80000000;
}

export function snAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}
