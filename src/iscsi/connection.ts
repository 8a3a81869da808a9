/**
 * One iSCSI connection: login (login.ts), then the full feature phase — SCSI commands with their
 * Data-Out / R2T / Data-In transfers, NOP, Text (SendTargets), task management and Logout.
 *
 * Design notes:
 *  - The reader loop never waits for anything but the socket: a command is registered as a task
 *    and runs on its own, so Data-Out PDUs for earlier commands are always read (no deadlock
 *    between a command waiting for bytes of the budget and the data that would finish another).
 *  - Memory: unsolicited data (immediate data and the first burst) is bounded by the protocol —
 *    the command window (session.ts) times FirstBurstLength. Everything else waits for bytes:
 *    a READ takes its transfer length from the connection's budget and the daemon's (shared with
 *    NBD and NFS) before it runs; a WRITE takes them before its first R2T. The bytes are given
 *    back once the last Data-In has been handed to the kernel (the socket's write callback).
 *  - Sequence numbers: every PDU the target sends carries ExpCmdSN/MaxCmdSN of the window;
 *    StatSN advances on each PDU that carries status (SCSI Response, Data-In with S, NOP-In
 *    answering a ping, Text/Logout/TMF responses, Reject); R2T carries the current StatSN. DataSN
 *    counts Data-In PDUs per command, R2TSN counts R2Ts per command.
 *  - Each PDU is written in one cork/uncork step, so two PDUs never interleave.
 *  - Task management waits for aborted tasks to finish their device requests before answering,
 *    and aborted tasks send nothing: a write acknowledged to nobody may have landed, a write
 *    acknowledged always has.
 *  - Protocol errors: a malformed but framed PDU is answered with Reject; a PDU whose framing
 *    cannot be trusted (bad header digest, a length over the limits) closes the connection.
 */
import type net from 'node:net';
import { errorText } from '../errors.js';
import { ByteReader, ConnectionClosed } from '../nbd/byte-reader.js';
import type { ByteBudget } from '../util/byte-budget.js';
import { endGracefully } from '../util/connection-limits.js';
import { TickCork } from '../util/tick-cork.js';
import type { Logger } from '../util/log.js';
import { LoginNegotiator, LOGIN_DATA_SEGMENT, LoginStatus, type LoginContext, type LoginOutcome } from './login.js';
import type { IscsiTarget } from './names.js';
import {
  BHS_LENGTH,
  dataIn,
  decodeLun,
  encodePdu,
  EXPCMDSN_OFFSET,
  logoutResponse,
  lunField,
  MAXCMDSN_OFFSET,
  nextPdu,
  nopIn,
  NO_DIGESTS,
  Op,
  PduError,
  r2t,
  readPdu,
  reject,
  RejectReason,
  RESERVED_TAG,
  scsiCommandFields,
  scsiResponse,
  snLess,
  STATSN_OFFSET,
  taskMgmtResponse,
  textResponse,
  type DigestOptions,
  type Pdu,
} from './pdu.js';
import { dataOutLength, execute, LogicalUnit, MAX_TRANSFER_BYTES, recycleReadBuffer, type NexusState } from './scsi.js';
import type { CatalogEntry } from '../exports/catalog.js';
import type { PersistentReservations } from './reservations.js';
import { senseSegment, Status } from './sense.js';
import { IscsiSession } from './session.js';
import { encodeText, MAX_TEXT_BYTES, parseText, splitText, type TextPairs } from './text.js';

/** What a connection needs of its server. */
export interface ConnectionHost {
  readonly log: Logger;
  readonly budget: ByteBudget;
  readonly maxInflightBytes: number;
  readonly loginTimeoutMs: number;
  readonly queueDepth: number;
  loginContext(): LoginContext;
  newTsih(): number;
  target(name: string): IscsiTarget | undefined;
  targets(): IscsiTarget[];
  /** Registers a session that reached the full feature phase, ending one it reinstates first. */
  register(session: IscsiSession): Promise<void>;
  unregister(session: IscsiSession): void;
  /** The persistent reservations of a published disk (one table per catalog entry, shared by every session). */
  reservations(entry: CatalogEntry): Promise<PersistentReservations>;
  /** TARGET WARM RESET: aborts the tasks of every session of a target. */
  warmReset(targetName: string, except: IscsiSession): Promise<void>;
  readonly shuttingDown: boolean;
  /** Logs a refusal (bad login, protocol violation), rate-limited per kind and client address. */
  refuse(kind: string, client: string, msg: string, fields?: Record<string, unknown>): void;
}

const TMF = { AbortTask: 1, AbortTaskSet: 2, ClearAca: 3, ClearTaskSet: 4, LunReset: 5, TargetWarmReset: 6, TargetColdReset: 7, TaskReassign: 8 } as const;
const TMF_RESPONSE = { Complete: 0, NoTask: 1, NoLun: 2, NotSupported: 5, ReassignNotSupported: 4, Rejected: 255 } as const;

type SendKind = 'status' | 'r2t' | 'data' | 'login';

interface Task {
  readonly itt: number;
  readonly lunRaw: Buffer;
  readonly lun: number;
  readonly cdb: Buffer;
  readonly edtl: number;
  readonly read: boolean;
  readonly write: boolean;
  readonly cmdSN: number;
  readonly counted: boolean;
  /** Set by task management or the end of the connection; the task then answers nothing. */
  aborted: boolean;
  /** Created only when the task has to wait for budget bytes (the slow path), to cancel that wait. */
  waiting: AbortController | undefined;
  /** Data-Out pieces received (offset, bytes), copied together when the command runs. */
  pieces: Array<{ offset: number; data: Buffer }>;
  received: number;
  unsolicitedExpected: number;
  unsolicitedReceived: number;
  /** Where the next R2T starts, and the open R2T (MaxOutstandingR2T is 1). */
  solicitNext: number;
  r2tOpen: { ttt: number; offset: number; length: number; received: number } | undefined;
  r2tSN: number;
  /** DataSN the next Data-Out of the current sequence must carry (unsolicited, then per R2T). */
  dataSN: number;
  /** Bytes this task holds of the connection's budget and of the daemon's (each clamps to its total). */
  held: number;
  heldDaemon: number;
  /** The budget bytes' answer: true/false at once, or a promise while the task waits for them. */
  holding: boolean | Promise<boolean> | undefined;
  running: boolean;
  finished: Promise<void>;
  finish: () => void;
}

export class IscsiConnection {
  readonly #socket: net.Socket;
  readonly #host: ConnectionHost;
  readonly #log: Logger;
  readonly #reader: ByteReader;
  readonly #connBudget: ByteBudget;
  #digests: DigestOptions = NO_DIGESTS;
  #statSN: number;
  #session: IscsiSession | undefined;
  #target: IscsiTarget | undefined;
  readonly #tasks = new Map<number, Task>();
  readonly #nexus: NexusState = {};
  #nextTtt = 1;
  readonly #tickCork: TickCork;
  #readerTurn: Promise<void> | undefined;
  /** Aborted when the connection ends: device requests still queued below give up. */
  readonly #gone = new AbortController();
  #closing = false;
  #textState: { itt: number; incoming: Buffer[]; bytes: number; outgoing: Buffer[]; ttt: number } | undefined;

  readonly #client: string;

  constructor(socket: net.Socket, host: ConnectionHost, log: Logger, connBudget: ByteBudget, client = 'unknown') {
    this.#client = client;
    this.#socket = socket;
    this.#tickCork = new TickCork(socket);
    this.#host = host;
    this.#log = log;
    this.#connBudget = connBudget;
    this.#reader = new ByteReader(socket, 32 * 1024 * 1024);
    this.#statSN = (Math.random() * 0x7fffffff) >>> 0;
  }

  get session(): IscsiSession | undefined {
    return this.#session;
  }

  async serve(): Promise<void> {
    try {
      const ok = await this.#login();
      if (!ok) return;
      await this.#fullFeature();
    } catch (err) {
      if (err instanceof PduError) {
        this.#host.refuse('iscsi-protocol-violation', this.#client, 'iSCSI protocol violation; closing connection', { reason: err.message });
      } else if (!(err instanceof ConnectionClosed)) {
        this.#log.error('iSCSI connection failed', { err: errorText(err) });
      }
    } finally {
      await this.#teardown();
    }
  }

  /** Ends the connection now: tasks are aborted and drained, the socket closed. */
  async terminate(): Promise<void> {
    this.#closing = true;
    this.#gone.abort(new Error('connection closed'));
    this.#socket.destroy();
    await this.#abortTasks(() => true);
  }

  async #teardown(): Promise<void> {
    this.#closing = true;
    this.#gone.abort(new Error('connection closed'));
    await this.#abortTasks(() => true);
    const s = this.#session;
    if (s) {
      this.#host.unregister(s);
      await s.closeUnits();
      this.#log.info('iSCSI session ended', { initiator: s.initiatorName, target: s.targetName ?? '(discovery)' });
    }
    await endGracefully(this.#socket);
  }

  // ---- login ----

  async #login(): Promise<boolean> {
    const ctx = this.#host.loginContext();
    const neg = new LoginNegotiator(ctx);
    neg.tsih = this.#host.newTsih();
    const timer = setTimeout(() => {
      this.#host.refuse('iscsi-login-timeout', this.#client, 'iSCSI login timed out; closing');
      this.#socket.destroy();
    }, this.#host.loginTimeoutMs);
    let cmdSN = 0;
    try {
      for (;;) {
        const p = await readPdu(this.#reader, { ...NO_DIGESTS, maxDataLength: LOGIN_DATA_SEGMENT });
        if (p.opcode !== Op.Login) {
          this.#host.refuse('iscsi-protocol-violation', this.#client, 'iSCSI: non-login PDU during login; closing', { opcode: p.opcode });
          return false;
        }
        cmdSN = p.raw.readUInt32BE(24);
        const step = neg.handle(p);
        if (step.failed) {
          this.#sendLogin(step.response.bhs, step.response.data, cmdSN);
          this.#host.refuse('iscsi-login-refused', this.#client, 'iSCSI login refused', { reason: step.failed, status: step.response.bhs.readUInt16BE(36).toString(16) });
          return false;
        }
        if (step.done) {
          const ok = await this.#enter(step.done, neg.tsih);
          if (!ok) {
            const b = step.response.bhs;
            b[1] = b[1]! & 0x0c; // no transit; CSG kept
            b.writeUInt16BE(0, 14);
            b[36] = LoginStatus.TargetError[0];
            b[37] = LoginStatus.TargetError[1];
            this.#sendLogin(b, Buffer.alloc(0), cmdSN);
            return false;
          }
          this.#send(step.response.bhs, step.response.data, 'login');
          const s = this.#session!;
          this.#digests = { headerDigest: s.params.headerDigest, dataDigest: s.params.dataDigest };
          return true;
        }
        this.#sendLogin(step.response.bhs, step.response.data, cmdSN);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Login responses before the session exists: the window is the login's CmdSN. */
  #sendLogin(bhs: Buffer, data: Buffer, cmdSN: number): void {
    bhs.writeUInt32BE(this.#statSN, STATSN_OFFSET);
    this.#statSN = (this.#statSN + 1) >>> 0;
    bhs.writeUInt32BE(cmdSN >>> 0, EXPCMDSN_OFFSET);
    bhs.writeUInt32BE((cmdSN + this.#host.queueDepth - 1) >>> 0, MAXCMDSN_OFFSET);
    this.#write(encodePdu(bhs, data, NO_DIGESTS));
  }

  /** Creates the session (opening its LUNs) and registers it; false if the target went away. */
  async #enter(o: LoginOutcome, tsih: number): Promise<boolean> {
    const session = new IscsiSession({
      tsih,
      isid: o.isid,
      initiatorName: o.initiatorName,
      targetName: o.targetName,
      type: o.sessionType,
      params: o.params,
      cmdSN: o.cmdSN,
      depth: this.#host.queueDepth,
    });
    session.terminate = () => this.terminate();
    if (o.sessionType === 'Normal') {
      const t = this.#host.target(o.targetName!);
      if (!t) return false;
      this.#target = t;
      try {
        for (let lun = 0; lun < t.luns.length; lun++) {
          const entry = t.luns[lun]!;
          const gate = await entry.open({ onUnexpectedError: (err, op) => this.#log.error('unexpected device error', { op, err: errorText(err), export: entry.name }) });
          const reservations = await this.#host.reservations(entry);
          session.units.set(lun, { lun, gate, unit: new LogicalUnit({ id: entry.name, device: gate, capabilities: entry.capabilities(), targetName: t.name, reservations }) });
        }
      } catch (err) {
        this.#log.warn('iSCSI: cannot open a LUN of the target', { target: t.name, err: errorText(err) });
        await session.closeUnits();
        return false;
      }
    }
    await this.#host.register(session);
    this.#session = session;
    this.#nexus.nexus = { id: session.key, initiatorName: o.initiatorName, isid: o.isid };
    this.#log.info('iSCSI session started', { initiator: o.initiatorName, target: o.targetName ?? '(discovery)', luns: session.units.size, tsih });
    return true;
  }

  // ---- sending ----

  #send(bhs: Buffer, data: Buffer | undefined, kind: SendKind): Promise<void> {
    const w = this.#session!.window;
    if (kind === 'status' || kind === 'login') {
      bhs.writeUInt32BE(this.#statSN, STATSN_OFFSET);
      this.#statSN = (this.#statSN + 1) >>> 0;
    } else if (kind === 'r2t') {
      bhs.writeUInt32BE(this.#statSN, STATSN_OFFSET);
    }
    bhs.writeUInt32BE(w.expCmdSN, EXPCMDSN_OFFSET);
    bhs.writeUInt32BE(w.maxCmdSN, MAXCMDSN_OFFSET);
    return this.#write(encodePdu(bhs, data, kind === 'login' ? NO_DIGESTS : this.#digests));
  }

  /**
   * Queues one PDU's parts. The socket stays corked until the current burst of work is done
   * (process.nextTick runs after the microtasks that completed commands), so the responses of
   * commands finishing together leave in one writev instead of one system call each.
   */
  #write(parts: Buffer[]): Promise<void> {
    const s = this.#socket;
    if (s.destroyed || !s.writable) return Promise.resolve();
    this.#tickCork.hold();
    return new Promise((resolve) => {
      for (let i = 0; i < parts.length - 1; i++) s.write(parts[i]!);
      s.write(parts[parts.length - 1]!, () => resolve());
    });
  }

  #reject(p: Pdu | Buffer, reason: number): void {
    const raw = Buffer.isBuffer(p) ? p : p.raw;
    this.#send(reject(reason), Buffer.from(raw.subarray(0, BHS_LENGTH)), 'status');
  }

  // ---- full feature phase ----

  async #fullFeature(): Promise<void> {
    const s = this.#session!;
    const limits = { ...this.#digests, maxDataLength: s.params.maxRecvDataSegmentLength };
    while (!this.#closing) {
      let p: Pdu;
      try {
        const next = nextPdu(this.#reader, limits);
        p = next instanceof Promise ? await next : next;
      } catch (err) {
        if (err instanceof PduError && !err.fatal) {
          // A data digest error: the framing holds; the PDU is dropped with a Reject (ERL 0: the
          // initiator recovers the task or the session).
          this.#host.refuse('iscsi-data-digest', this.#client, 'iSCSI data digest error; PDU rejected');
          if (err.header) this.#reject(err.header, err.reason);
          continue;
        }
        throw err;
      }
      const stop = this.#dispatch(p);
      if (stop === true || (stop !== false && (await stop))) return;
    }
  }

  /**
   * Handles one PDU; true when the connection is to end (after Logout). Synchronous but for task
   * management and Logout, so the reader goes on with the next buffered PDU at once.
   */
  #dispatch(p: Pdu): boolean | Promise<boolean> {
    const s = this.#session!;
    const cmdSN = p.raw.readUInt32BE(24);
    const numbered = p.opcode === Op.ScsiCommand || p.opcode === Op.TaskMgmt || p.opcode === Op.Text || p.opcode === Op.Logout || (p.opcode === Op.NopOut && p.itt !== RESERVED_TAG);
    let counted = false;
    if (numbered && !p.immediate) {
      if (!s.window.accept(cmdSN)) {
        this.#log.debug('iSCSI: command outside the CmdSN window dropped', { cmdSN, exp: s.window.expCmdSN });
        return false;
      }
      counted = true;
    }
    switch (p.opcode) {
      case Op.NopOut:
        if (p.itt !== RESERVED_TAG) this.#send(nopIn(p.itt, RESERVED_TAG, lunField(p.raw)), p.data.length > 0 ? Buffer.from(p.data) : undefined, 'status');
        return false;
      case Op.ScsiCommand:
        this.#command(p, counted);
        return false;
      case Op.DataOut:
        this.#dataOut(p);
        return false;
      case Op.TaskMgmt:
        return this.#taskManagement(p).then(() => false);
      case Op.Text:
        this.#text(p);
        return false;
      case Op.Logout:
        return this.#logout(p);
      case Op.Snack:
        this.#reject(p, RejectReason.ProtocolError); // ErrorRecoveryLevel 0: no SNACK
        return false;
      default:
        this.#reject(p, RejectReason.CommandNotSupported);
        return false;
    }
  }

  // ---- SCSI commands ----

  #command(p: Pdu, counted: boolean): void {
    const s = this.#session!;
    const f = scsiCommandFields(p);
    if (f instanceof PduError) {
      this.#reject(p, f.reason);
      return;
    }
    if (s.type !== 'Normal') {
      this.#reject(p, RejectReason.ProtocolError);
      return;
    }
    if (this.#tasks.has(p.itt)) {
      this.#reject(p, RejectReason.TaskInProgress);
      return;
    }
    if (p.data.length > 0 && (!f.write || !s.params.immediateData || p.data.length > s.params.firstBurstLength || p.data.length > f.expectedLength)) {
      this.#reject(p, RejectReason.ProtocolError);
      return;
    }
    if (counted) s.window.started();
    let finish!: () => void;
    const finished = new Promise<void>((r) => (finish = r));
    const edtl = f.expectedLength;
    const task: Task = {
      itt: p.itt,
      lunRaw: Buffer.from(f.lun),
      lun: decodeLun(f.lun),
      cdb: Buffer.from(f.cdb),
      edtl,
      read: f.read,
      write: f.write,
      cmdSN: f.cmdSN,
      counted,
      aborted: false,
      waiting: undefined,
      pieces: [],
      received: 0,
      unsolicitedExpected: 0,
      unsolicitedReceived: 0,
      solicitNext: 0,
      r2tOpen: undefined,
      r2tSN: 0,
      dataSN: 0,
      held: 0,
      heldDaemon: 0,
      holding: undefined,
      running: false,
      finished,
      finish,
    };
    this.#tasks.set(p.itt, task);
    if (f.write && edtl > 0) {
      task.unsolicitedExpected = s.params.initialR2T ? p.data.length : Math.min(s.params.firstBurstLength, edtl);
      if (p.data.length > 0) {
        // Not copied: the socket's chunk stays alive until the command ran (immediate data is
        // bounded by the command window times FirstBurstLength).
        task.pieces.push({ offset: 0, data: p.data });
        task.received += p.data.length;
        task.unsolicitedReceived += p.data.length;
      }
      task.solicitNext = task.unsolicitedExpected;
      if (edtl <= MAX_TRANSFER_BYTES && task.solicitNext < edtl) {
        task.holding = this.#hold(task, edtl);
        void Promise.resolve(task.holding).then((ok) => {
          if (ok) this.#nextR2T(task);
        });
      }
      this.#maybeRun(task);
    } else {
      void this.#run(task);
    }
  }

  /**
   * Takes bytes from the connection's and the daemon's budgets; false if the task went away.
   * Answers at once (no promise) when both budgets have room now, the common case.
   */
  #hold(task: Task, n: number): boolean | Promise<boolean> {
    const want = Math.min(n, MAX_TRANSFER_BYTES);
    if (want === 0) return true;
    // Fast path: both budgets have room now (the common case), no promise round trips.
    const now = this.#connBudget.tryAcquire(want);
    if (now > 0) {
      const daemon = this.#host.budget.tryAcquire(now);
      if (daemon === now) {
        task.held = now;
        task.heldDaemon = daemon;
        return true;
      }
      if (daemon > 0) this.#host.budget.release(daemon);
      this.#connBudget.release(now);
    }
    return this.#holdSlowly(task, want);
  }

  async #holdSlowly(task: Task, want: number): Promise<boolean> {
    try {
      task.waiting ??= new AbortController();
      if (task.aborted) return false;
      const a = await this.#connBudget.acquire(want, task.waiting.signal);
      try {
        const b = await this.#host.budget.acquire(want, task.waiting.signal);
        if (task.aborted) {
          // Aborted (and ended) while the bytes were on their way: give them straight back.
          this.#connBudget.release(a);
          this.#host.budget.release(b);
          return false;
        }
        task.held = a;
        task.heldDaemon = b;
        return true;
      } catch {
        this.#connBudget.release(a);
        return false;
      }
    } catch {
      return false;
    }
  }

  #release(task: Task): void {
    this.#connBudget.release(task.held);
    this.#host.budget.release(task.heldDaemon);
    task.held = 0;
    task.heldDaemon = 0;
  }

  #nextR2T(task: Task): void {
    if (task.aborted || task.r2tOpen || task.solicitNext >= task.edtl) return;
    const s = this.#session!;
    const length = Math.min(s.params.maxBurstLength, task.edtl - task.solicitNext);
    const ttt = this.#nextTtt;
    this.#nextTtt = this.#nextTtt >= 0x7fffffff ? 1 : this.#nextTtt + 1;
    task.r2tOpen = { ttt, offset: task.solicitNext, length, received: 0 };
    task.dataSN = 0;
    this.#send(r2t(task.itt, task.lunRaw, ttt, task.r2tSN, task.solicitNext, length), undefined, 'r2t');
    task.r2tSN = (task.r2tSN + 1) >>> 0;
    task.solicitNext += length;
  }

  #dataOut(p: Pdu): void {
    const task = this.#tasks.get(p.itt);
    if (!task || task.running) return; // an aborted task's data, or a late duplicate: dropped
    const ttt = p.raw.readUInt32BE(20);
    const offset = p.raw.readUInt32BE(40);
    const len = p.data.length;
    const dataSN = p.raw.readUInt32BE(36);
    if (dataSN !== task.dataSN) {
      // ErrorRecoveryLevel 0: a lost or reordered Data-Out cannot be recovered within the task.
      throw new PduError(`Data-Out DataSN ${dataSN} where ${task.dataSN} was expected`);
    }
    task.dataSN = (task.dataSN + 1) >>> 0;
    if (offset + len > task.edtl) {
      this.#reject(p, RejectReason.InvalidPduField);
      return;
    }
    if (ttt === RESERVED_TAG) {
      if (task.unsolicitedReceived + len > task.unsolicitedExpected || offset + len > task.unsolicitedExpected) {
        this.#reject(p, RejectReason.ProtocolError);
        return;
      }
      task.unsolicitedReceived += len;
    } else {
      const open = task.r2tOpen;
      if (!open || open.ttt !== ttt || offset < open.offset || offset + len > open.offset + open.length) {
        this.#reject(p, RejectReason.InvalidPduField);
        return;
      }
      open.received += len;
      if (open.received >= open.length || p.final) {
        task.r2tOpen = undefined;
        if (open.received < open.length) task.solicitNext = open.offset + open.received; // ask again for the rest
        this.#nextR2T(task);
      }
    }
    if (len > 0 && offset < MAX_TRANSFER_BYTES) task.pieces.push({ offset, data: Buffer.from(p.data) });
    task.received += len;
    this.#maybeRun(task);
  }

  #maybeRun(task: Task): void {
    if (task.running || task.aborted) return;
    const unsolicitedDone = task.unsolicitedReceived >= task.unsolicitedExpected;
    const tooLarge = task.edtl > MAX_TRANSFER_BYTES;
    const solicitedDone = tooLarge || (task.solicitNext >= task.edtl && !task.r2tOpen);
    if (unsolicitedDone && solicitedDone) void this.#run(task);
  }

  /**
   * Resolves once the reader has handled the PDUs already received. One setImmediate shared by
   * every task that waits: they resume in the same tick, so their responses leave in one writev
   * (a setImmediate each made a tick, and a writev, per command).
   */
  #afterBufferedPdus(): Promise<void> {
    return (this.#readerTurn ??= new Promise<void>((resolve) =>
      setImmediate(() => {
        this.#readerTurn = undefined;
        resolve();
      }),
    ));
  }

  async #run(task: Task): Promise<void> {
    task.running = true;
    const s = this.#session!;
    try {
      // PDUs already received are handled first (an ABORT TASK right behind its command wins).
      if (this.#reader.available >= BHS_LENGTH) {
        await this.#afterBufferedPdus();
        if (task.aborted) return;
      }
      task.holding ??= this.#hold(task, task.write ? task.edtl : Math.max(task.edtl, dataOutLength(task.cdb, s.units.get(task.lun)?.unit)));
      const held = task.holding;
      if (held !== true && (held === false || !(await held))) return;
      let dataOut: Buffer | undefined;
      if (task.write && task.edtl > 0) {
        const length = Math.min(task.edtl, MAX_TRANSFER_BYTES);
        const only = task.pieces.length === 1 ? task.pieces[0]! : undefined;
        if (only && only.offset === 0 && only.data.length === length) {
          dataOut = only.data; // one piece (the immediate data of a small write): no second copy
        } else {
          dataOut = Buffer.alloc(length);
          for (const pc of task.pieces) pc.data.copy(dataOut, pc.offset);
        }
        task.pieces = [];
      }
      const unit = s.units.get(task.lun)?.unit;
      // Device requests see the connection's signal (queued ones are cancelled when it ends); an
      // aborted task's request runs to its end and is waited for, its answer dropped.
      const result = await execute(unit, { cdb: task.cdb, dataOut, signal: this.#gone.signal }, this.#nexus, s.lunList);
      if (task.aborted || this.#closing) return;
      if (result.status !== Status.Good) {
        this.#log.debug('iSCSI command failed', { cdb: task.cdb.toString('hex'), edtl: task.edtl, sense: result.sense?.toString('hex') });
      }
      await this.#respond(task, result.status, result.data, result.sense, dataOut?.length ?? 0);
      // Every PDU of the answer has been handed to the kernel, unless the socket went away (then
      // some may still be queued below, and the buffer is left to the GC).
      if (result.data && this.#socket.writable && !this.#socket.destroyed) recycleReadBuffer(result.data);
    } catch (err) {
      this.#log.error('iSCSI command failed unexpectedly', { err: errorText(err) });
    } finally {
      this.#release(task);
      this.#tasks.delete(task.itt);
      if (task.counted) s.window.finished();
      task.finish();
    }
  }

  async #respond(task: Task, status: number, data: Buffer | undefined, sense: Buffer | undefined, dataOutLen: number): Promise<void> {
    const s = this.#session!;
    if (task.write) {
      const needed = dataOutLength(task.cdb, s.units.get(task.lun)?.unit);
      const residual = task.edtl - needed;
      await this.#send(
        scsiResponse({ itt: task.itt, status, ...(residual > 0 ? { underflow: residual } : residual < 0 ? { overflow: -residual } : {}), expDataSN: task.r2tSN }),
        sense ? senseSegment(sense) : undefined,
        'status',
      );
      void dataOutLen;
      return;
    }
    const produced = data?.length ?? 0;
    const sendable = task.read ? Math.min(produced, task.edtl) : 0;
    const overflow = produced > sendable ? produced - sendable : 0;
    const underflow = status === Status.Good && task.edtl > produced ? task.edtl - produced : 0;
    const residual = overflow ? { overflow } : underflow ? { underflow } : {};
    if (sendable === 0 || status !== Status.Good) {
      let dataSN = 0;
      if (sendable > 0) dataSN = await this.#sendDataIn(task, data!.subarray(0, sendable), false);
      await this.#send(scsiResponse({ itt: task.itt, status, ...residual, expDataSN: dataSN }), sense ? senseSegment(sense) : undefined, 'status');
      return;
    }
    await this.#sendDataIn(task, data!.subarray(0, sendable), true, residual);
  }

  /** Sends Data-In PDUs; with `collapse` the last one carries the GOOD status. Returns the PDU count. */
  async #sendDataIn(task: Task, data: Buffer, collapse: boolean, residual: { overflow?: number; underflow?: number } = {}): Promise<number> {
    const s = this.#session!;
    const seg = s.params.maxSendDataSegmentLength;
    const burst = s.params.maxBurstLength;
    let dataSN = 0;
    let last: Promise<void> = Promise.resolve();
    for (let off = 0; off < data.length; off += seg) {
      const n = Math.min(seg, data.length - off);
      const isLast = off + n >= data.length;
      const endOfBurst = isLast || Math.floor((off + n) / burst) !== Math.floor(off / burst) || (off + n) % burst === 0;
      const bhs = dataIn({ itt: task.itt, lun: task.lunRaw, final: endOfBurst, dataSN, offset: off, ...(isLast && collapse ? { status: Status.Good, ...residual } : {}) });
      last = this.#send(bhs, data.subarray(off, off + n), isLast && collapse ? 'status' : 'data');
      dataSN++;
    }
    await last;
    return dataSN;
  }

  // ---- task management ----

  async #taskManagement(p: Pdu): Promise<void> {
    const s = this.#session!;
    const fn = p.flags & 0x7f;
    const lun = decodeLun(lunField(p.raw));
    const ref = p.raw.readUInt32BE(20);
    const refCmdSN = p.raw.readUInt32BE(32);
    const answer = (r: number): void => void this.#send(taskMgmtResponse(p.itt, r), undefined, 'status');
    if (s.type !== 'Normal') return answer(TMF_RESPONSE.Rejected);
    switch (fn) {
      case TMF.AbortTask: {
        const t = this.#tasks.get(ref);
        if (t && t.lun === lun) {
          await this.#abortTasks((x) => x === t);
          return answer(TMF_RESPONSE.Complete);
        }
        // Not here: finished already, or never seen (RFC 7143 §11.5.1 b/c).
        const before = snLess(refCmdSN, p.raw.readUInt32BE(24));
        return answer(before ? TMF_RESPONSE.Complete : TMF_RESPONSE.NoTask);
      }
      case TMF.AbortTaskSet:
      case TMF.ClearTaskSet:
        if (!s.units.has(lun)) return answer(TMF_RESPONSE.NoLun);
        await this.#abortTasks((x) => x.lun === lun);
        return answer(TMF_RESPONSE.Complete);
      case TMF.LunReset:
        if (!s.units.has(lun)) return answer(TMF_RESPONSE.NoLun);
        await this.#abortTasks((x) => x.lun === lun);
        return answer(TMF_RESPONSE.Complete);
      case TMF.TargetWarmReset:
        await this.#abortTasks(() => true);
        if (s.targetName) await this.#host.warmReset(s.targetName, s);
        return answer(TMF_RESPONSE.Complete);
      case TMF.TaskReassign:
        return answer(TMF_RESPONSE.ReassignNotSupported);
      default:
        return answer(TMF_RESPONSE.NotSupported);
    }
  }

  /** Aborts the matching tasks and waits until their device requests have finished. */
  async abortTasks(match: (t: Task) => boolean): Promise<void> {
    await this.#abortTasks(match);
  }

  async #abortTasks(match: (t: Task) => boolean): Promise<void> {
    const victims = [...this.#tasks.values()].filter(match);
    for (const t of victims) {
      t.aborted = true;
      t.waiting?.abort(new Error('task aborted'));
      if (!t.running) {
        // Never started (waiting for data or bytes): it ends here.
        this.#tasks.delete(t.itt);
        this.#release(t);
        if (t.counted) this.#session?.window.finished();
        t.finish();
      }
    }
    await Promise.all(victims.map((t) => t.finished));
  }

  // ---- Text (SendTargets) ----

  #text(p: Pdu): void {
    const s = this.#session!;
    const ttt = p.raw.readUInt32BE(20);
    const cont = (p.flags & 0x40) !== 0;
    let st = this.#textState;
    if (st && st.itt !== p.itt) st = this.#textState = undefined; // a new exchange resets an old one
    if (st && st.outgoing.length > 0) {
      if (ttt !== st.ttt) return this.#reject(p, RejectReason.InvalidPduField);
      return this.#sendText(p);
    }
    if (!st) st = this.#textState = { itt: p.itt, incoming: [], bytes: 0, outgoing: [], ttt: RESERVED_TAG };
    st.bytes += p.data.length;
    if (st.bytes > MAX_TEXT_BYTES) {
      this.#textState = undefined;
      return this.#reject(p, RejectReason.ProtocolError);
    }
    st.incoming.push(Buffer.from(p.data));
    if (cont) {
      st.ttt = this.#nextTtt++;
      this.#send(textResponse(p.itt, false, false, st.ttt, lunField(p.raw)), undefined, 'status');
      return;
    }
    const parsed = parseText(Buffer.concat(st.incoming));
    st.incoming = [];
    if (!parsed.ok) {
      this.#textState = undefined;
      return this.#reject(p, RejectReason.ProtocolError);
    }
    const out: TextPairs = [];
    for (const [k, v] of parsed.pairs) {
      if (k === 'SendTargets') {
        const targets = v === 'All' && s.type === 'Discovery' ? this.#host.targets() : v === '' || v === 'All' ? (this.#target ? [this.#target] : []) : [this.#host.target(v.toLowerCase())].filter((t) => t !== undefined);
        for (const t of targets) {
          if (s.type === 'Normal' && t.name !== s.targetName) continue;
          out.push(['TargetName', t.name], ['TargetAddress', `${portal(this.#socket)},1`]);
        }
      } else {
        out.push([k, 'NotUnderstood']);
      }
    }
    const text = encodeText(out);
    st.outgoing = splitText(text, s.params.maxSendDataSegmentLength);
    st.ttt = this.#nextTtt++;
    this.#sendText(p);
  }

  #sendText(p: Pdu): void {
    const st = this.#textState!;
    const piece = st.outgoing.shift() ?? Buffer.alloc(0);
    const more = st.outgoing.length > 0;
    this.#send(textResponse(p.itt, !more, more, more ? st.ttt : RESERVED_TAG, lunField(p.raw)), piece, 'status');
    if (!more) this.#textState = undefined;
  }

  // ---- Logout ----

  async #logout(p: Pdu): Promise<boolean> {
    const reason = p.flags & 0x7f;
    const cid = p.raw.readUInt16BE(20);
    void cid;
    if (reason === 2) {
      this.#send(logoutResponse(p.itt, 2), undefined, 'status'); // connection recovery not supported (ERL 0)
      return false;
    }
    // Close the session or this connection (the same here): running tasks finish, queued ones end.
    const waiting = [...this.#tasks.values()].filter((t) => !t.running);
    await this.#abortTasks((t) => waiting.includes(t));
    await Promise.all([...this.#tasks.values()].map((t) => t.finished));
    await this.#send(logoutResponse(p.itt, 0, 0, 0), undefined, 'status');
    this.#closing = true;
    return true;
  }
}

function portal(socket: net.Socket): string {
  const a = socket.localAddress ?? '127.0.0.1';
  const host = a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
  return `${host.includes(':') ? `[${host}]` : host}:${socket.localPort}`;
}

