/**
 * SCSI-3 persistent reservations (SPC-4 §5.13, PERSISTENT RESERVE IN/OUT) of one published disk,
 * shared by every I_T nexus that reaches it: what failover clusters (Windows, Pacemaker's
 * fence_scsi) use to let one node write a shared disk and fence the others.
 *
 * Design notes:
 *  - State: registrations (I_T nexus -> reservation key), at most one reservation (holder nexus
 *    and type) and the PRgeneration. An I_T nexus is the session's key: initiator name + ISID +
 *    target (session.ts), so two sessions of the same initiator are two nexuses, as SPC wants.
 *  - All-registrants types (WEAR, EAAR): every registered nexus holds the reservation; the holder
 *    recorded is the one that reserved, and the reservation ends when the last registration goes.
 *  - Access (SPC-4 table 52 for the commands a block target has): `access(nexus)` is 'full', 'read'
 *    or 'none'; scsi.ts answers RESERVATION CONFLICT to commands outside it. Commands that only
 *    describe the unit (INQUIRY, REPORT LUNS, READ CAPACITY, REQUEST SENSE, TEST UNIT READY, PR IN,
 *    REPORT SUPPORTED OPERATION CODES) are always allowed; PR OUT checks keys itself.
 *  - Persistence through power loss (APTPL): with a store (a session disk's reservation-file.ts)
 *    PTPL_C=1, and after a REGISTER with APTPL=1 every change is saved before the command is
 *    answered (a failed save restores the state before it and answers HARDWARE ERROR); APTPL=0
 *    removes the saved state. Without a store (restore points, ad-hoc exports) PTPL_C=0 and
 *    APTPL=1 is refused. PERSISTENT RESERVE OUT commands of one disk run one at a time.
 *  - Left out, and said so by REPORT CAPABILITIES: SPEC_I_PT and ALL_TG_PT (SIP_C=ATP_C=0; there is
 *    one target port), REGISTER AND MOVE and REPLACE LOST RESERVATION (invalid service action). No unit attentions (REGISTRATIONS PREEMPTED,
 *    RESERVATIONS RELEASED) are queued for the nexuses that lose a registration or reservation
 *    (libiscsi's ownership tests, which tgt fails for its RESERVATIONS RELEASED, expect none).
 *  - PREEMPT AND ABORT also aborts the preempted nexuses' commands on this disk: the table's owner
 *    (the server) gives it `abortTasks`, and the command completes after those tasks ended.
 */
import type { PrState, PrStore } from './reservation-file.js';
import { Asc, invalidCdb, invalidParam, ScsiError, SenseKey } from './sense.js';

export const PrType = { WriteExclusive: 1, ExclusiveAccess: 3, WriteExclusiveRegistrantsOnly: 5, ExclusiveAccessRegistrantsOnly: 6, WriteExclusiveAllRegistrants: 7, ExclusiveAccessAllRegistrants: 8 } as const;
const VALID_TYPES = new Set<number>(Object.values(PrType));
const OutSa = { Register: 0, Reserve: 1, Release: 2, Clear: 3, Preempt: 4, PreemptAndAbort: 5, RegisterAndIgnore: 6 } as const;
const InSa = { ReadKeys: 0, ReadReservation: 1, ReportCapabilities: 2, ReadFullStatus: 3 } as const;
export const PR_OUT_PARAMETER_BYTES = 24;

/** Thrown for RESERVATION CONFLICT (a status, not sense). */
export class ReservationConflict extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReservationConflict';
  }
}

export interface Nexus {
  /** The I_T nexus key (session.ts). */
  id: string;
  initiatorName: string;
  isid: Buffer;
}

const allRegistrants = (type: number): boolean => type === PrType.WriteExclusiveAllRegistrants || type === PrType.ExclusiveAccessAllRegistrants;
const registrantsOnly = (type: number): boolean => type === PrType.WriteExclusiveRegistrantsOnly || type === PrType.ExclusiveAccessRegistrantsOnly;
const exclusiveAccess = (type: number): boolean =>
  type === PrType.ExclusiveAccess || type === PrType.ExclusiveAccessRegistrantsOnly || type === PrType.ExclusiveAccessAllRegistrants;

export class PersistentReservations {
  /** Aborts the commands of these nexuses on this disk (PREEMPT AND ABORT); absent: nothing to abort. */
  readonly #abortTasks: ((nexusIds: string[]) => Promise<void>) | undefined;
  #generation = 0;
  /** Nexuses whose registration the running PREEMPT removed. */
  #preempted: string[] = [];

  readonly #store: PrStore | undefined;
  /** The last REGISTER asked for persistence through power loss. */
  #aptpl = false;
  /** PERSISTENT RESERVE OUT commands run one at a time (a save is part of each). */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts: { abortTasks?: (nexusIds: string[]) => Promise<void>; store?: PrStore; initial?: PrState } = {}) {
    this.#abortTasks = opts.abortTasks;
    this.#store = opts.store;
    if (opts.initial) this.#restore(opts.initial, true);
  }

  /** nexus id -> key, and who each nexus is (READ FULL STATUS). */
  readonly #regs = new Map<string, { key: bigint; nexus: Nexus }>();
  #res: { holder: string; type: number } | undefined;

  get generation(): number {
    return this.#generation;
  }

  /** Whether `cdb` from `nexus` must be answered RESERVATION CONFLICT. */
  conflicts(nexus: string, cdb: Buffer): boolean {
    if (!this.#res) return false;
    const kind = commandKind(cdb);
    if (kind === 'always') return false;
    const a = this.access(nexus);
    return a === 'none' || (a === 'read' && kind === 'write');
  }

  /** What a nexus may do now: everything, read only, or nothing (beyond the always-allowed commands). */
  access(nexus: string): 'full' | 'read' | 'none' {
    const r = this.#res;
    if (!r || this.#holds(nexus)) return 'full';
    if ((registrantsOnly(r.type) || allRegistrants(r.type)) && this.#regs.has(nexus)) return 'full';
    return exclusiveAccess(r.type) ? 'none' : 'read';
  }

  /** PERSISTENT RESERVE IN: the parameter data (the caller cuts it to the allocation length). */
  in(cdb: Buffer): Buffer {
    const sa = cdb[1]! & 0x1f;
    switch (sa) {
      case InSa.ReadKeys: {
        const keys = [...this.#regs.values()];
        const b = Buffer.alloc(8 + 8 * keys.length);
        b.writeUInt32BE(this.#generation, 0);
        b.writeUInt32BE(8 * keys.length, 4);
        keys.forEach((k, i) => b.writeBigUInt64BE(k.key, 8 + 8 * i));
        return b;
      }
      case InSa.ReadReservation: {
        const r = this.#res;
        const b = Buffer.alloc(r ? 24 : 8);
        b.writeUInt32BE(this.#generation, 0);
        if (r) {
          b.writeUInt32BE(16, 4);
          b.writeBigUInt64BE(allRegistrants(r.type) ? 0n : (this.#regs.get(r.holder)?.key ?? 0n), 8);
          b[21] = r.type; // scope 0 (logical unit) in the high nibble
        }
        return b;
      }
      case InSa.ReportCapabilities: {
        const b = Buffer.alloc(8);
        b.writeUInt16BE(8, 0);
        // byte 2: RLR_C, CRH (RESERVE(6)/RELEASE(6) are not offered), SIP_C, ATP_C 0; PTPL_C with a store
        b[2] = this.#store ? 0x01 : 0;
        b[3] = 0x80 | (this.#aptpl ? 0x01 : 0); // TMV: the type mask is valid; ALLOW COMMANDS 0; PTPL_A
        b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
        b[5] = 0x01; // EX_AC_AR
        return b;
      }
      case InSa.ReadFullStatus: {
        const descs = [...this.#regs.entries()].map(([id, r]) => fullStatusDescriptor(r.key, r.nexus, this.#res && this.#holds(id) ? this.#res.type : undefined));
        const body = Buffer.concat(descs);
        const h = Buffer.alloc(8);
        h.writeUInt32BE(this.#generation, 0);
        h.writeUInt32BE(body.length, 4);
        return Buffer.concat([h, body]);
      }
      default:
        throw invalidCdb(1, 4);
    }
  }

  /**
   * PERSISTENT RESERVE OUT from `nexus` with its parameter list. Throws ScsiError or
   * ReservationConflict; PREEMPT AND ABORT resolves once the preempted nexuses' tasks have ended.
   */
  out(nexus: Nexus, cdb: Buffer, params: Buffer | undefined): Promise<void> {
    const run = this.#queue.then(() => this.#out(nexus, cdb, params));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #out(nexus: Nexus, cdb: Buffer, params: Buffer | undefined): Promise<void> {
    const wasPersistent = this.#aptpl;
    const before = this.#store ? this.#state() : undefined;
    const preempted = this.#change(nexus, cdb, params);
    if (this.#store && (this.#aptpl || wasPersistent)) {
      try {
        await this.#store.save(this.#aptpl ? this.#state() : undefined);
      } catch (err) {
        this.#restore(before!, wasPersistent);
        throw new ScsiError(SenseKey.HardwareError, Asc.InternalTargetFailure, `saving the persistent reservations failed: ${(err as Error).message}`);
      }
    }
    if ((cdb[1]! & 0x1f) === OutSa.PreemptAndAbort && preempted.length > 0) await this.#abortTasks?.(preempted);
  }

  /** The state as saved (reservation-file.ts). */
  #state(): PrState {
    const r = this.#res;
    return {
      generation: this.#generation,
      registrations: [...this.#regs.values()].map((x) => ({ id: x.nexus.id, initiatorName: x.nexus.initiatorName, isid: x.nexus.isid.toString('hex'), key: x.key.toString() })),
      ...(r ? { reservation: { holder: r.holder, type: r.type } } : {}),
    };
  }

  #restore(s: PrState, aptpl: boolean): void {
    this.#generation = s.generation;
    this.#regs.clear();
    for (const x of s.registrations) this.#regs.set(x.id, { key: BigInt(x.key), nexus: { id: x.id, initiatorName: x.initiatorName, isid: Buffer.from(x.isid, 'hex') } });
    const res = s.reservation;
    this.#res = res && (allRegistrants(res.type) ? this.#regs.size > 0 : this.#regs.has(res.holder)) ? { ...res } : undefined;
    this.#aptpl = aptpl;
  }

  /** Applies a PERSISTENT RESERVE OUT; returns the nexuses a PREEMPT took the registration of. */
  #change(nexus: Nexus, cdb: Buffer, params: Buffer | undefined): string[] {
    this.#preempted = [];
    const sa = cdb[1]! & 0x1f;
    const scope = cdb[2]! >> 4;
    const type = cdb[2]! & 0x0f;
    const length = cdb.readUInt32BE(5);
    if (sa > OutSa.RegisterAndIgnore) throw invalidCdb(1, 4);
    if (length !== PR_OUT_PARAMETER_BYTES || !params || params.length < PR_OUT_PARAMETER_BYTES) {
      throw new ScsiError(SenseKey.IllegalRequest, Asc.ParameterListLengthError, `the parameter list must be ${PR_OUT_PARAMETER_BYTES} bytes`);
    }
    const key = params.readBigUInt64BE(0);
    const saKey = params.readBigUInt64BE(8);
    const flags = params[20]!;
    if (flags & 0x08) throw invalidParam(20); // SPEC_I_PT: not capable
    if (flags & 0x04) throw invalidParam(20); // ALL_TG_PT: not capable
    const registering = sa === OutSa.Register || sa === OutSa.RegisterAndIgnore;
    if (registering && flags & 0x01 && !this.#store) throw invalidParam(20); // APTPL: not capable here (PTPL_C=0)
    const usesType = sa === OutSa.Reserve || sa === OutSa.Release || sa === OutSa.Preempt || sa === OutSa.PreemptAndAbort;
    if (usesType && scope !== 0) throw invalidCdb(2, 7);
    if (usesType && !VALID_TYPES.has(type)) throw invalidCdb(2, 3);
    const mine = this.#regs.get(nexus.id);
    switch (sa) {
      case OutSa.Register:
      case OutSa.RegisterAndIgnore: {
        if (sa === OutSa.Register && (mine ? key !== mine.key : key !== 0n)) throw new ReservationConflict('REGISTER: the reservation key does not match');
        if (saKey === 0n) {
          if (mine) this.#unregister(nexus.id);
        } else this.#regs.set(nexus.id, { key: saKey, nexus });
        this.#aptpl = (flags & 0x01) !== 0; // the last REGISTER's APTPL applies to the whole state
        this.#generation = (this.#generation + 1) >>> 0;
        return [];
      }
      case OutSa.Reserve: {
        this.#checkKey(mine, key);
        const r = this.#res;
        if (!r) this.#res = { holder: nexus.id, type };
        else if (!this.#holds(nexus.id) || r.type !== type) throw new ReservationConflict('RESERVE: another reservation is held');
        return [];
      }
      case OutSa.Release: {
        this.#checkKey(mine, key);
        const r = this.#res;
        if (!r || !this.#holds(nexus.id)) return [];
        if (r.type !== type) throw new ScsiError(SenseKey.IllegalRequest, [0x26, 0x04], 'invalid release of persistent reservation');
        this.#res = undefined;
        return [];
      }
      case OutSa.Clear:
        this.#checkKey(mine, key);
        this.#regs.clear();
        this.#res = undefined;
        this.#generation = (this.#generation + 1) >>> 0;
        return [];
      default: {
        // PREEMPT, PREEMPT AND ABORT
        this.#checkKey(mine, key);
        this.#preempt(nexus.id, saKey, type);
        this.#generation = (this.#generation + 1) >>> 0;
        return this.#preempted.filter((id) => id !== nexus.id);
      }
    }
  }

  #holds(nexus: string): boolean {
    const r = this.#res;
    if (!r) return false;
    return allRegistrants(r.type) ? this.#regs.has(nexus) : r.holder === nexus;
  }

  #checkKey(mine: { key: bigint } | undefined, key: bigint): void {
    if (!mine || mine.key !== key) throw new ReservationConflict('the nexus is not registered with this reservation key');
  }

  #unregister(nexus: string): void {
    this.#regs.delete(nexus);
    this.#preempted.push(nexus);
    const r = this.#res;
    if (!r) return;
    if (allRegistrants(r.type) ? this.#regs.size === 0 : r.holder === nexus) this.#res = undefined;
    else if (allRegistrants(r.type) && r.holder === nexus) this.#res = { holder: this.#regs.keys().next().value!, type: r.type };
  }

  /** Removes the registrations holding `key` (not the preempting nexus'); true if any. */
  #removeKey(key: bigint, except?: string): boolean {
    let any = false;
    for (const [id, r] of [...this.#regs]) {
      if (r.key !== key) continue;
      any = true;
      if (id !== except) this.#unregister(id);
    }
    return any;
  }

  #preempt(nexus: string, saKey: bigint, type: number): void {
    const r = this.#res;
    if (r && allRegistrants(r.type)) {
      if (saKey === 0n) {
        for (const id of [...this.#regs.keys()]) {
          if (id === nexus) continue;
          this.#regs.delete(id);
          this.#preempted.push(id);
        }
        this.#res = { holder: nexus, type };
      } else if (!this.#removeKey(saKey, nexus)) throw new ReservationConflict('PREEMPT: no registration with that key');
      return;
    }
    if (r && this.#regs.get(r.holder)?.key === saKey) {
      // Preempting the holder: its registrations go (the preempting nexus keeps its own), and the
      // preempting nexus holds a reservation of the type asked for.
      this.#res = undefined;
      this.#removeKey(saKey, nexus);
      this.#res = { holder: nexus, type };
      return;
    }
    if (saKey === 0n) throw invalidParam(8);
    if (!this.#removeKey(saKey, nexus)) throw new ReservationConflict('PREEMPT: no registration with that key');
  }
}

/**
 * How a command meets a reservation: 'always' allowed (it only describes the unit, or is PR
 * itself), a 'read' (allowed to write-exclusive non-holders), or a 'write' (everything else:
 * writes, WRITE SAME, UNMAP, COMPARE AND WRITE, SYNCHRONIZE CACHE, START STOP, ...).
 */
export function commandKind(cdb: Buffer): 'always' | 'read' | 'write' {
  switch (cdb[0]) {
    case 0x00: // TEST UNIT READY
    case 0x03: // REQUEST SENSE
    case 0x12: // INQUIRY
    case 0x25: // READ CAPACITY (10)
    case 0x5e: // PERSISTENT RESERVE IN
    case 0x5f: // PERSISTENT RESERVE OUT (checks keys itself)
    case 0xa0: // REPORT LUNS
    case 0xa3: // REPORT SUPPORTED OPERATION CODES
      return 'always';
    case 0x9e: // READ CAPACITY (16) is always allowed; GET LBA STATUS reads
      return (cdb[1]! & 0x1f) === 0x10 ? 'always' : 'read';
    case 0x08:
    case 0x28:
    case 0xa8:
    case 0x88: // READ 6/10/12/16
    case 0x2f:
    case 0xaf:
    case 0x8f: // VERIFY 10/12/16
    case 0x34:
    case 0x90: // PRE-FETCH 10/16
    case 0x1a:
    case 0x5a: // MODE SENSE 6/10
      return 'read';
    default:
      return 'write';
  }
}

/** A READ FULL STATUS descriptor with an iSCSI TransportID (format 01h: name,i,0xISID). */
function fullStatusDescriptor(key: bigint, n: Nexus, holderType: number | undefined): Buffer {
  const name = Buffer.from(`${n.initiatorName},i,0x${n.isid.toString('hex')}\0`, 'utf8');
  const padded = Buffer.alloc(Math.ceil(name.length / 4) * 4);
  name.copy(padded);
  const tid = Buffer.alloc(4 + padded.length);
  tid[0] = 0x40 | 0x05; // format 01h, protocol identifier 5 (iSCSI)
  tid.writeUInt16BE(padded.length, 2);
  padded.copy(tid, 4);
  const d = Buffer.alloc(24);
  d.writeBigUInt64BE(key, 0);
  if (holderType !== undefined) {
    d[12] = 0x01; // R_HOLDER
    d[13] = holderType;
  }
  d.writeUInt16BE(1, 18); // relative target port identifier
  d.writeUInt32BE(tid.length, 20);
  return Buffer.concat([d, tid]);
}
