/**
 * One iSCSI session (RFC 7143 §4): the I_T nexus identified by InitiatorName + ISID + target, its
 * TSIH, the negotiated parameters, its logical units and the command window.
 *
 * MaxConnections is 1, so a session lives and dies with its one connection (ErrorRecoveryLevel 0:
 * a lost connection ends the session; the initiator logs in again, reinstating it by its ISID).
 *
 * The command window (§4.2.2.1): ExpCmdSN is the next CmdSN expected; MaxCmdSN = ExpCmdSN +
 * depth - 1 - (commands received and not finished), so the initiator never has more than `depth`
 * commands queued here, and MaxCmdSN never goes backwards (receiving a command moves ExpCmdSN and
 * the count by one each; finishing one opens the window by one). Commands outside the window are
 * dropped silently, as the RFC says.
 */
import type { CheckedDevice } from '../blockdev/checked.js';
import type { SessionParams } from './login.js';
import { snAdd, snLess } from './pdu.js';
import type { LogicalUnit } from './scsi.js';

export const DEFAULT_QUEUE_DEPTH = 64;

export class CommandWindow {
  #exp: number;
  readonly #depth: number;
  #pending = 0;

  constructor(first: number, depth = DEFAULT_QUEUE_DEPTH) {
    this.#exp = first >>> 0;
    this.#depth = depth;
  }

  get expCmdSN(): number {
    return this.#exp;
  }

  get maxCmdSN(): number {
    return snAdd(this.#exp, this.#depth - 1 - this.#pending);
  }

  /** A non-immediate command with this CmdSN arrived: true if it is the one expected (counted). */
  accept(cmdSN: number): boolean {
    if (cmdSN !== this.#exp) return false;
    this.#exp = snAdd(this.#exp, 1);
    return true;
  }

  /** A non-immediate command that arrived out of order but inside the window (a gap): RFC drops it. */
  inWindow(cmdSN: number): boolean {
    return !snLess(cmdSN, this.#exp) && !snLess(this.maxCmdSN, cmdSN);
  }

  /** Counts a command as queued (until `finished`). */
  started(): void {
    this.#pending++;
  }

  finished(): void {
    if (this.#pending > 0) this.#pending--;
  }
}

export interface SessionUnit {
  lun: number;
  unit: LogicalUnit;
  gate: CheckedDevice;
}

export class IscsiSession {
  readonly tsih: number;
  readonly isid: Buffer;
  readonly initiatorName: string;
  readonly targetName: string | undefined;
  readonly type: 'Discovery' | 'Normal';
  readonly params: SessionParams;
  readonly window: CommandWindow;
  readonly units = new Map<number, SessionUnit>();
  /** Ends the session's connection and waits for its tasks to drain (reinstatement, shutdown). */
  terminate: () => Promise<void> = async () => undefined;

  constructor(f: { tsih: number; isid: Buffer; initiatorName: string; targetName: string | undefined; type: 'Discovery' | 'Normal'; params: SessionParams; cmdSN: number; depth?: number }) {
    this.tsih = f.tsih;
    this.isid = f.isid;
    this.initiatorName = f.initiatorName;
    this.targetName = f.targetName;
    this.type = f.type;
    this.params = f.params;
    this.window = new CommandWindow(f.cmdSN, f.depth);
  }

  /** The key of the I_T nexus: reinstatement replaces a session with the same key. */
  get key(): string {
    return `${this.initiatorName.toLowerCase()}\0${this.isid.toString('hex')}\0${this.targetName ?? ''}`;
  }

  #lunList: number[] | undefined;

  /** LUN numbers in order (the units are set once, at login). */
  get lunList(): number[] {
    if (!this.#lunList || this.#lunList.length !== this.units.size) this.#lunList = [...this.units.keys()].sort((a, b) => a - b);
    return this.#lunList;
  }

  async closeUnits(): Promise<void> {
    const units = [...this.units.values()];
    this.units.clear();
    await Promise.all(units.map((u) => u.gate.close().catch(() => undefined)));
  }
}
