/**
 * The login phase of one iSCSI connection (RFC 7143 §6, §11.12-13, §13): stages SecurityNegotiation
 * (0) -> LoginOperationalNegotiation (1) -> FullFeaturePhase (3), text negotiation over as many
 * rounds as the initiator needs, with the Continue bit in both directions, and one-way or mutual
 * CHAP (MD5, RFC 1994).
 *
 * Design notes:
 *  - `LoginNegotiator.handle(pdu)` takes one Login Request and gives the Login Response to send
 *    (its sequence numbers are filled in by the connection) and, at the end, the outcome: the
 *    negotiated parameters or a failure status. It never throws on what the initiator sent.
 *  - Key answers follow §13: lists pick our first preference the initiator offered (digests:
 *    None before CRC32C); numbers take min/max per key; booleans are OR (InitialR2T,
 *    DataPDUInOrder, DataSequenceInOrder) or AND (ImmediateData); declarations are noted; unknown
 *    keys are answered NotUnderstood. MaxConnections is 1 and ErrorRecoveryLevel 0 (the simple path),
 *    whatever is offered.
 *  - TargetPortalGroupTag travels in the first Login Response of a Normal session; our
 *    MaxRecvDataSegmentLength is declared in the first operational answer.
 *  - The transit to the next stage happens only when the initiator asks for it (T bit) and the
 *    current stage is complete: authentication done when required, TargetName and InitiatorName
 *    known for the full feature phase.
 */
import crypto from 'node:crypto';
import { loginResponse, type Pdu } from './pdu.js';
import { encodeBinary, encodeText, MAX_TEXT_BYTES, parseBinary, parseNumber, parseText, splitText, type TextPairs } from './text.js';

export const Stage = { Security: 0, Operational: 1, FullFeature: 3 } as const;

/** Login status class/detail pairs (§11.13.5). */
export const LoginStatus = {
  Success: [0x00, 0x00],
  InitiatorError: [0x02, 0x00],
  AuthenticationFailure: [0x02, 0x01],
  AuthorizationFailure: [0x02, 0x02],
  NotFound: [0x02, 0x03],
  UnsupportedVersion: [0x02, 0x05],
  TooManyConnections: [0x02, 0x06],
  MissingParameter: [0x02, 0x07],
  SessionTypeNotSupported: [0x02, 0x09],
  SessionDoesNotExist: [0x02, 0x0a],
  InvalidDuringLogin: [0x02, 0x0b],
  TargetError: [0x03, 0x00],
  ServiceUnavailable: [0x03, 0x01],
} as const satisfies Record<string, readonly [number, number]>;

export interface ChapCredentials {
  /** What the initiator must prove (one-way CHAP). */
  user: string;
  secret: string;
  /** What the target proves when the initiator asks (mutual CHAP). */
  targetUser?: string;
  targetSecret?: string;
}

export interface SessionParams {
  headerDigest: boolean;
  dataDigest: boolean;
  /** The initiator's MaxRecvDataSegmentLength: the largest data segment we may send. */
  maxSendDataSegmentLength: number;
  /** Ours: the largest data segment the initiator may send. */
  maxRecvDataSegmentLength: number;
  maxBurstLength: number;
  firstBurstLength: number;
  initialR2T: boolean;
  immediateData: boolean;
  maxOutstandingR2T: number;
  dataPduInOrder: boolean;
  dataSequenceInOrder: boolean;
  defaultTime2Wait: number;
  defaultTime2Retain: number;
  errorRecoveryLevel: number;
  maxConnections: number;
}

export interface LoginLimits {
  maxRecvDataSegmentLength: number;
  maxBurstLength: number;
  firstBurstLength: number;
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = { maxRecvDataSegmentLength: 256 * 1024, maxBurstLength: 1024 * 1024, firstBurstLength: 256 * 1024 };

export interface LoginContext {
  portalGroupTag: number;
  limits: LoginLimits;
  /** CHAP required of every initiator when set. */
  chap?: ChapCredentials | undefined;
  /** Whether a target name exists (and is offered on this portal). */
  targetExists(name: string): boolean;
  /** A login with a non-zero TSIH: the status to refuse it with (MaxConnections is 1). */
  tsihStatus(tsih: number): readonly [number, number];
}

export interface LoginOutcome {
  sessionType: 'Discovery' | 'Normal';
  initiatorName: string;
  initiatorAlias: string | undefined;
  targetName: string | undefined;
  isid: Buffer;
  cid: number;
  /** The CmdSN of the first Login Request: the session's first ExpCmdSN. */
  cmdSN: number;
  params: SessionParams;
}

export interface LoginStep {
  /** BHS and data of the Login Response to send (StatSN/ExpCmdSN/MaxCmdSN filled in by the sender). */
  response: { bhs: Buffer; data: Buffer };
  /** Set on the response that enters the full feature phase. */
  done?: LoginOutcome;
  /** Set on a failure response: the connection closes after sending it. */
  failed?: string;
}

const DEFAULT_PARAMS = (limits: LoginLimits): SessionParams => ({
  headerDigest: false,
  dataDigest: false,
  maxSendDataSegmentLength: 8192,
  maxRecvDataSegmentLength: limits.maxRecvDataSegmentLength,
  maxBurstLength: 262144,
  firstBurstLength: 65536,
  initialR2T: true,
  immediateData: true,
  maxOutstandingR2T: 1,
  dataPduInOrder: true,
  dataSequenceInOrder: true,
  defaultTime2Wait: 2,
  defaultTime2Retain: 20,
  errorRecoveryLevel: 0,
  maxConnections: 1,
});

/** The largest data segment during login: the RFC default of 8192 both ways. */
export const LOGIN_DATA_SEGMENT = 8192;

type ChapState = 'none' | 'method' | 'challenged' | 'done';

export class LoginNegotiator {
  readonly #ctx: LoginContext;
  readonly #params: SessionParams;
  #first = true;
  #stage: number | undefined;
  #isid = Buffer.alloc(6);
  #tsih = 0;
  #cid = 0;
  #cmdSN = 0;
  #itt = 0;
  #incoming: Buffer[] = [];
  #incomingBytes = 0;
  /** Response text still to send with the Continue bit, and the stage fields it goes with. */
  #outgoing: Buffer[] = [];
  #outgoingTransit: { transit: boolean; nsg: number } | undefined;
  #sessionType: 'Discovery' | 'Normal' | undefined;
  #initiatorName: string | undefined;
  #initiatorAlias: string | undefined;
  #targetName: string | undefined;
  #authMethod: 'None' | 'CHAP' | undefined;
  #chap: ChapState = 'none';
  #chapId = 0;
  #chapChallenge = Buffer.alloc(0);
  #sentPortalGroupTag = false;
  #sentOurLimits = false;
  #authFailed: string | undefined;

  constructor(ctx: LoginContext) {
    this.#ctx = ctx;
    this.#params = DEFAULT_PARAMS(ctx.limits);
  }

  handle(p: Pdu): LoginStep {
    const transit = (p.flags & 0x80) !== 0;
    const cont = (p.flags & 0x40) !== 0;
    const csg = (p.flags >> 2) & 3;
    const nsg = p.flags & 3;
    if (this.#first) {
      this.#first = false;
      p.raw.copy(this.#isid, 0, 8, 14);
      this.#tsih = p.raw.readUInt16BE(14);
      this.#cid = p.raw.readUInt16BE(20);
      this.#cmdSN = p.raw.readUInt32BE(24);
      this.#itt = p.itt;
      const vmax = p.raw[2]!;
      const vmin = p.raw[3]!;
      if (vmin > 0x00 || vmax < 0x00) return this.#fail(LoginStatus.UnsupportedVersion, csg, `unsupported version ${vmin}-${vmax}`);
      if (this.#tsih !== 0) {
        const st = this.#ctx.tsihStatus(this.#tsih);
        return this.#fail(st, csg, `login to add a connection to session ${this.#tsih}`);
      }
      this.#stage = csg;
    }
    this.#itt = p.itt;
    if (csg === 2 || csg !== this.#stage) return this.#fail(LoginStatus.InitiatorError, csg, `login stage ${csg} where ${this.#stage} was expected`);
    if (transit && cont) return this.#fail(LoginStatus.InitiatorError, csg, 'Transit and Continue both set');
    if (transit && (nsg === 2 || nsg <= csg)) return this.#fail(LoginStatus.InitiatorError, csg, `cannot go from stage ${csg} to ${nsg}`);

    // We are still sending a long answer: the initiator acknowledges each piece with an empty request.
    if (this.#outgoing.length > 0) {
      if (p.dataLength > 0) return this.#fail(LoginStatus.InitiatorError, csg, 'text sent while the target was continuing its answer');
      return this.#sendOutgoing(csg);
    }

    this.#incomingBytes += p.data.length;
    if (this.#incomingBytes > MAX_TEXT_BYTES) return this.#fail(LoginStatus.InitiatorError, csg, 'login text too long');
    this.#incoming.push(Buffer.from(p.data));
    if (cont) {
      // Acknowledge the piece; the keys are answered once the initiator's text is complete.
      return { response: { bhs: this.#bhs(false, false, csg, 0), data: Buffer.alloc(0) } };
    }
    const text = Buffer.concat(this.#incoming);
    this.#incoming = [];
    this.#incomingBytes = 0;
    const parsed = parseText(text);
    if (!parsed.ok) return this.#fail(LoginStatus.InitiatorError, csg, `bad login text: ${parsed.reason}`);

    const answer: TextPairs = [];
    for (const [k, v] of parsed.pairs) {
      const r = this.#key(k, v, csg, answer);
      if (r) return r;
    }
    const chapDone = this.#finishChap(csg, answer);
    if (chapDone) return chapDone;
    if (this.#authFailed) return this.#fail(LoginStatus.AuthenticationFailure, csg, this.#authFailed);
    if (!this.#sessionType && this.#initiatorName !== undefined) this.#sessionType = 'Normal';
    if (this.#sessionType === 'Normal' && this.#targetName !== undefined && !this.#ctx.targetExists(this.#targetName)) {
      return this.#fail(LoginStatus.NotFound, csg, `no target ${this.#targetName}`);
    }
    if (this.#sessionType === 'Normal' && !this.#sentPortalGroupTag) {
      answer.unshift(['TargetPortalGroupTag', String(this.#ctx.portalGroupTag)]);
      this.#sentPortalGroupTag = true;
    }
    if (csg === Stage.Operational && !this.#sentOurLimits) {
      this.#sentOurLimits = true;
      if (!answer.some(([k]) => k === 'MaxRecvDataSegmentLength')) answer.push(['MaxRecvDataSegmentLength', String(this.#params.maxRecvDataSegmentLength)]);
    }

    let go = false;
    if (transit) {
      const missing = this.#missing(csg, nsg);
      if (missing) return missing;
      go = this.#canLeave(csg);
    }
    this.#outgoing = splitText(encodeText(answer), LOGIN_DATA_SEGMENT);
    this.#outgoingTransit = { transit: go, nsg: go ? nsg : 0 };
    return this.#sendOutgoing(csg);
  }

  #sendOutgoing(csg: number): LoginStep {
    const piece = this.#outgoing.shift() ?? Buffer.alloc(0);
    const more = this.#outgoing.length > 0;
    const t = this.#outgoingTransit ?? { transit: false, nsg: 0 };
    const transit = !more && t.transit;
    const nsg = transit ? t.nsg : 0;
    const final = transit && nsg === Stage.FullFeature;
    const bhs = this.#bhs(transit, more, csg, nsg);
    if (transit) this.#stage = nsg;
    if (!final) return { response: { bhs, data: piece } };
    return {
      response: { bhs, data: piece },
      done: {
        sessionType: this.#sessionType ?? 'Normal',
        initiatorName: this.#initiatorName!,
        initiatorAlias: this.#initiatorAlias,
        targetName: this.#targetName,
        isid: Buffer.from(this.#isid),
        cid: this.#cid,
        cmdSN: this.#cmdSN,
        params: { ...this.#params },
      },
    };
  }

  /** The TSIH the final response carries (set by the connection once the session exists). */
  tsih = 0;

  #bhs(transit: boolean, cont: boolean, csg: number, nsg: number): Buffer {
    const final = transit && nsg === Stage.FullFeature;
    return loginResponse({ transit, cont, csg, nsg, isid: this.#isid, tsih: final ? this.tsih : this.#tsih, itt: this.#itt, statusClass: 0, statusDetail: 0 });
  }

  #fail(status: readonly [number, number], csg: number, why: string): LoginStep {
    const bhs = loginResponse({ transit: false, cont: false, csg: csg & 3, nsg: 0, isid: this.#isid, tsih: this.#tsih, itt: this.#itt, statusClass: status[0], statusDetail: status[1] });
    return { response: { bhs, data: Buffer.alloc(0) }, failed: why };
  }

  /** What the initiator must have said before leaving a stage; a failure step if something is missing. */
  #missing(csg: number, nsg: number): LoginStep | undefined {
    void nsg;
    if (this.#initiatorName === undefined) return this.#fail(LoginStatus.MissingParameter, csg, 'no InitiatorName');
    if (this.#sessionType === 'Normal' && this.#targetName === undefined) return this.#fail(LoginStatus.MissingParameter, csg, 'no TargetName in a Normal session');
    if (this.#ctx.chap && (this.#chap === 'none' || (csg === Stage.Operational && this.#chap !== 'done'))) {
      return this.#fail(LoginStatus.AuthenticationFailure, csg, 'CHAP required');
    }
    return undefined;
  }

  #canLeave(csg: number): boolean {
    if (csg === Stage.Security) return this.#chap === 'done' || (!this.#ctx.chap && this.#chap === 'none');
    return true;
  }

  /** Answers one key into `out`; a failure step ends the login. */
  #key(k: string, v: string, csg: number, out: TextPairs): LoginStep | undefined {
    const p = this.#params;
    const num = (min: number, max: number): number | undefined => {
      const n = parseNumber(v);
      return n !== undefined && n >= min && n <= max ? n : undefined;
    };
    const bool = (): boolean | undefined => (v === 'Yes' ? true : v === 'No' ? false : undefined);
    switch (k) {
      case 'InitiatorName':
        if (v.length === 0 || v.length > 223) return this.#fail(LoginStatus.InitiatorError, csg, 'bad InitiatorName');
        this.#initiatorName = v;
        return undefined;
      case 'InitiatorAlias':
        this.#initiatorAlias = v;
        return undefined;
      case 'TargetName':
        if (v.length === 0 || v.length > 223) return this.#fail(LoginStatus.InitiatorError, csg, 'bad TargetName');
        this.#targetName = v.toLowerCase();
        return undefined;
      case 'SessionType':
        if (v !== 'Discovery' && v !== 'Normal') return this.#fail(LoginStatus.SessionTypeNotSupported, csg, `session type ${v}`);
        this.#sessionType = v;
        return undefined;
      case 'AuthMethod': {
        if (csg !== Stage.Security) return this.#fail(LoginStatus.InitiatorError, csg, 'AuthMethod outside the security stage');
        const offered = v.split(',');
        const choice = this.#ctx.chap ? (offered.includes('CHAP') ? 'CHAP' : undefined) : offered.includes('None') ? 'None' : offered.includes('CHAP') ? 'None' : undefined;
        if (!choice || (choice === 'None' && !offered.includes('None'))) {
          out.push([k, 'Reject']);
          this.#authFailed = `no acceptable AuthMethod in ${v}`;
          return undefined;
        }
        this.#authMethod = choice;
        if (choice === 'CHAP') this.#chap = 'method';
        out.push([k, choice]);
        return undefined;
      }
      case 'CHAP_A': {
        if (this.#chap !== 'method' || !this.#ctx.chap) return this.#fail(LoginStatus.InitiatorError, csg, 'CHAP_A out of turn');
        if (!v.split(',').includes('5')) {
          out.push([k, 'Reject']);
          this.#authFailed = 'initiator does not offer CHAP with MD5';
          return undefined;
        }
        this.#chapId = crypto.randomInt(256);
        this.#chapChallenge = crypto.randomBytes(16);
        this.#chap = 'challenged';
        out.push([k, '5'], ['CHAP_I', String(this.#chapId)], ['CHAP_C', encodeBinary(this.#chapChallenge)]);
        return undefined;
      }
      case 'CHAP_N':
      case 'CHAP_R':
      case 'CHAP_I':
      case 'CHAP_C':
        return this.#chapKey(k, v, csg);
      case 'HeaderDigest':
      case 'DataDigest': {
        const offered = v.split(',');
        const choice = offered.includes('None') ? 'None' : offered.includes('CRC32C') ? 'CRC32C' : 'Reject';
        if (k === 'HeaderDigest') p.headerDigest = choice === 'CRC32C';
        else p.dataDigest = choice === 'CRC32C';
        out.push([k, choice]);
        return undefined;
      }
      case 'MaxConnections': {
        const n = num(1, 65535);
        out.push([k, n === undefined ? 'Reject' : '1']);
        return undefined;
      }
      case 'ErrorRecoveryLevel': {
        const n = num(0, 2);
        out.push([k, n === undefined ? 'Reject' : '0']);
        return undefined;
      }
      case 'InitialR2T': {
        const b = bool();
        if (b === undefined) out.push([k, 'Reject']);
        else {
          p.initialR2T = b; // OR with ours (No)
          out.push([k, b ? 'Yes' : 'No']);
        }
        return undefined;
      }
      case 'ImmediateData': {
        const b = bool();
        if (b === undefined) out.push([k, 'Reject']);
        else {
          p.immediateData = b; // AND with ours (Yes)
          out.push([k, b ? 'Yes' : 'No']);
        }
        return undefined;
      }
      case 'DataPDUInOrder':
      case 'DataSequenceInOrder': {
        const b = bool();
        out.push([k, b === undefined ? 'Reject' : 'Yes']); // OR with ours (Yes)
        return undefined;
      }
      case 'MaxRecvDataSegmentLength': {
        const n = num(512, 16777215);
        if (n === undefined) return this.#fail(LoginStatus.InitiatorError, csg, `bad MaxRecvDataSegmentLength ${v}`);
        p.maxSendDataSegmentLength = n;
        if (!this.#sentOurLimits && csg === Stage.Operational) {
          this.#sentOurLimits = true;
          out.push([k, String(p.maxRecvDataSegmentLength)]);
        }
        return undefined;
      }
      case 'MaxBurstLength': {
        const n = num(512, 16777215);
        if (n === undefined) out.push([k, 'Reject']);
        else {
          p.maxBurstLength = Math.min(n, this.#ctx.limits.maxBurstLength);
          p.firstBurstLength = Math.min(p.firstBurstLength, p.maxBurstLength);
          out.push([k, String(p.maxBurstLength)]);
        }
        return undefined;
      }
      case 'FirstBurstLength': {
        const n = num(512, 16777215);
        if (n === undefined) out.push([k, 'Reject']);
        else {
          p.firstBurstLength = Math.min(n, this.#ctx.limits.firstBurstLength, p.maxBurstLength);
          out.push([k, String(p.firstBurstLength)]);
        }
        return undefined;
      }
      case 'DefaultTime2Wait': {
        const n = num(0, 3600);
        if (n === undefined) out.push([k, 'Reject']);
        else {
          p.defaultTime2Wait = Math.max(n, 2);
          out.push([k, String(p.defaultTime2Wait)]);
        }
        return undefined;
      }
      case 'DefaultTime2Retain': {
        const n = num(0, 3600);
        if (n === undefined) out.push([k, 'Reject']);
        else {
          p.defaultTime2Retain = Math.min(n, 20);
          out.push([k, String(p.defaultTime2Retain)]);
        }
        return undefined;
      }
      case 'MaxOutstandingR2T': {
        const n = num(1, 65535);
        out.push([k, n === undefined ? 'Reject' : '1']);
        return undefined;
      }
      case 'IFMarker':
      case 'OFMarker': {
        out.push([k, bool() === undefined ? 'Reject' : 'No']); // AND with ours (No)
        return undefined;
      }
      case 'OFMarkInt':
      case 'IFMarkInt':
        out.push([k, 'Irrelevant']);
        return undefined;
      default:
        out.push([k, 'NotUnderstood']);
        return undefined;
    }
  }

  #chapKey(k: string, v: string, csg: number): LoginStep | undefined {
    // The initiator's own challenge (mutual CHAP: CHAP_I, CHAP_C) may come with CHAP_A (libiscsi) or
    // with its response; its response (CHAP_N, CHAP_R) only after our challenge. They are checked
    // together once CHAP_R is in (#finishChap).
    const early = k === 'CHAP_I' || k === 'CHAP_C' ? this.#chap === 'method' || this.#chap === 'challenged' : this.#chap === 'challenged';
    if (!this.#ctx.chap || !early || csg !== Stage.Security) return this.#fail(LoginStatus.InitiatorError, csg, `${k} out of turn`);
    this.#chapKeys.set(k, v);
    return undefined;
  }

  /** Checks the initiator's CHAP response (and answers its challenge) once a round brought CHAP_R. */
  #finishChap(csg: number, out: TextPairs): LoginStep | undefined {
    const chap = this.#ctx.chap;
    if (!chap || this.#chap !== 'challenged' || !this.#chapKeys.has('CHAP_R')) return undefined;
    const user = this.#chapKeys.get('CHAP_N') ?? '';
    const resp = parseBinary(this.#chapKeys.get('CHAP_R')!);
    const expected = md5(this.#chapId, chap.secret, this.#chapChallenge);
    if (user !== chap.user || !resp || resp.length !== expected.length || !crypto.timingSafeEqual(resp, expected)) {
      return this.#fail(LoginStatus.AuthenticationFailure, csg, `CHAP failed for user '${user.slice(0, 64)}'`);
    }
    const mi = this.#chapKeys.get('CHAP_I');
    const mc = this.#chapKeys.get('CHAP_C');
    this.#chap = 'done';
    if (mi === undefined && mc === undefined) return undefined;
    const id = mi !== undefined ? parseNumber(mi) : undefined;
    const challenge = mc !== undefined ? parseBinary(mc) : undefined;
    if (id === undefined || id > 255 || !challenge || challenge.length === 0 || challenge.length > 1024) {
      return this.#fail(LoginStatus.AuthenticationFailure, csg, 'malformed mutual CHAP challenge');
    }
    if (challenge.equals(this.#chapChallenge)) return this.#fail(LoginStatus.AuthenticationFailure, csg, 'mutual CHAP challenge reflects ours');
    if (chap.targetUser === undefined || chap.targetSecret === undefined) return this.#fail(LoginStatus.AuthenticationFailure, csg, 'mutual CHAP asked for, not configured');
    out.push(['CHAP_N', chap.targetUser], ['CHAP_R', encodeBinary(md5(id, chap.targetSecret, challenge))]);
    return undefined;
  }

  readonly #chapKeys = new Map<string, string>();
}

function md5(id: number, secret: string, challenge: Buffer): Buffer {
  return crypto.createHash('md5').update(Buffer.from([id])).update(Buffer.from(secret, 'utf8')).update(challenge).digest();
}

/** CHAP response an initiator computes (for tests and the fuzz target). */
export function chapResponse(id: number, secret: string, challenge: Buffer): Buffer {
  return md5(id, secret, challenge);
}
