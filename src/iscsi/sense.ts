/**
 * SCSI status codes and sense data (SPC-4 §4.5): fixed format (0x70) by default, descriptor
 * format (0x72) when REQUEST SENSE asks for it. A `ScsiError` carries a sense key and ASC/ASCQ from
 * the command code that found the problem to the one place that builds the CHECK CONDITION.
 */

export const Status = {
  Good: 0x00,
  CheckCondition: 0x02,
  ConditionMet: 0x04,
  Busy: 0x08,
  ReservationConflict: 0x18,
  TaskSetFull: 0x28,
  TaskAborted: 0x40,
} as const;

export const SenseKey = {
  NoSense: 0x0,
  RecoveredError: 0x1,
  NotReady: 0x2,
  MediumError: 0x3,
  HardwareError: 0x4,
  IllegalRequest: 0x5,
  UnitAttention: 0x6,
  DataProtect: 0x7,
  AbortedCommand: 0xb,
  Miscompare: 0xe,
} as const;

/** [ASC, ASCQ] pairs used by the target. */
export const Asc = {
  NoAdditionalSense: [0x00, 0x00],
  NotReadyCauseNotReportable: [0x04, 0x00],
  WriteError: [0x0c, 0x00],
  UnrecoveredReadError: [0x11, 0x00],
  ParameterListLengthError: [0x1a, 0x00],
  MiscompareDuringVerify: [0x1d, 0x00],
  InvalidCommandOperationCode: [0x20, 0x00],
  LbaOutOfRange: [0x21, 0x00],
  InvalidFieldInCdb: [0x24, 0x00],
  LogicalUnitNotSupported: [0x25, 0x00],
  InvalidFieldInParameterList: [0x26, 0x00],
  WriteProtected: [0x27, 0x00],
  SpaceAllocationFailedWriteProtect: [0x27, 0x07],
  PowerOnResetOccurred: [0x29, 0x00],
  SavingParametersNotSupported: [0x39, 0x00],
  InternalTargetFailure: [0x44, 0x00],
  OvewrlappedCommands: [0x4e, 0x00],
} as const satisfies Record<string, readonly [number, number]>;

export class ScsiError extends Error {
  readonly key: number;
  readonly asc: number;
  readonly ascq: number;
  /** Sense-key specific: the byte (and bit) of the CDB or parameter list at fault. */
  readonly field: { cdb: boolean; byte: number; bit?: number } | undefined;
  /** The INFORMATION field (a miscompare's offset). */
  readonly information: number | undefined;
  constructor(key: number, asc: readonly [number, number], message: string, opts: { field?: { cdb: boolean; byte: number; bit?: number }; information?: number } = {}) {
    super(message);
    this.name = 'ScsiError';
    this.key = key;
    this.asc = asc[0];
    this.ascq = asc[1];
    this.field = opts.field;
    this.information = opts.information;
  }
}

export const invalidCdb = (byte: number, bit?: number): ScsiError =>
  new ScsiError(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb, `invalid field in CDB byte ${byte}`, { field: { cdb: true, byte, ...(bit !== undefined ? { bit } : {}) } });
export const invalidParam = (byte: number): ScsiError =>
  new ScsiError(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList, `invalid field in parameter list byte ${byte}`, { field: { cdb: false, byte } });
export const lbaOutOfRange = (): ScsiError => new ScsiError(SenseKey.IllegalRequest, Asc.LbaOutOfRange, 'LBA out of range');
export const invalidOpcode = (): ScsiError => new ScsiError(SenseKey.IllegalRequest, Asc.InvalidCommandOperationCode, 'invalid command operation code', { field: { cdb: true, byte: 0 } });
export const writeProtected = (): ScsiError => new ScsiError(SenseKey.DataProtect, Asc.WriteProtected, 'write protected');
export const lunNotSupported = (): ScsiError => new ScsiError(SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported, 'logical unit not supported');

export interface SenseFields {
  key: number;
  asc: number;
  ascq: number;
  field?: { cdb: boolean; byte: number; bit?: number } | undefined;
  information?: number | undefined;
}

/** Sense data: fixed format (18 bytes) or descriptor format. */
export function buildSense(s: SenseFields, descriptor = false): Buffer {
  if (descriptor) {
    const extra: Buffer[] = [];
    if (s.information !== undefined) {
      const d = Buffer.alloc(12);
      d[0] = 0x00;
      d[1] = 0x0a;
      d[2] = 0x80;
      d.writeBigUInt64BE(BigInt(s.information), 4);
      extra.push(d);
    }
    if (s.field) extra.push(Buffer.concat([Buffer.from([0x02, 0x06, 0, 0]), sks(s.field), Buffer.alloc(1)]));
    const body = Buffer.concat(extra);
    const h = Buffer.alloc(8);
    h[0] = 0x72;
    h[1] = s.key & 0x0f;
    h[2] = s.asc;
    h[3] = s.ascq;
    h[7] = body.length;
    return Buffer.concat([h, body]);
  }
  const b = Buffer.alloc(18);
  b[0] = 0x70;
  b[2] = s.key & 0x0f;
  if (s.information !== undefined) {
    b[0] |= 0x80; // VALID
    b.writeUInt32BE(Math.min(s.information, 0xffffffff) >>> 0, 3);
  }
  b[7] = 10;
  b[12] = s.asc;
  b[13] = s.ascq;
  if (s.field) sks(s.field).copy(b, 15);
  return b;
}

function sks(f: { cdb: boolean; byte: number; bit?: number }): Buffer {
  const b = Buffer.alloc(3);
  b[0] = 0x80 | (f.cdb ? 0x40 : 0) | (f.bit !== undefined ? 0x08 | (f.bit & 7) : 0);
  b.writeUInt16BE(f.byte & 0xffff, 1);
  return b;
}

/** The data segment of a SCSI Response carrying sense: a 2-byte SenseLength, then the sense. */
export function senseSegment(sense: Buffer): Buffer {
  const b = Buffer.alloc(2 + sense.length);
  b.writeUInt16BE(sense.length, 0);
  sense.copy(b, 2);
  return b;
}
