/**
 * ONC RPC messages (RFC 5531) for both transports: decoding a call (json-pack's RpcMessageDecoder
 * plus AUTH_SYS), running it against the registered programs, and encoding the reply header by
 * hand (24 bytes, AUTH_NONE verifier) so a reply body is never copied. The 4 bytes in front of
 * every encoded head are left for the TCP record mark (UDP skips them).
 */
import { RmRecordDecoder } from '@jsonjoy.com/json-pack/lib/rm/RmRecordDecoder.js';
import { RpcMessageDecoder } from '@jsonjoy.com/json-pack/lib/rpc/RpcMessageDecoder.js';
import { RpcCallMessage } from '@jsonjoy.com/json-pack/lib/rpc/messages.js';
import { errorText } from '../../errors.js';
import type { Logger } from '../../util/log.js';
import { parseAuthSys, type AuthSys } from './auth.js';
import { AcceptStat, AuthFlavor, MsgType, RejectStat, ReplyStat, RPC_VERSION } from './constants.js';

/** json-pack's byte reader (the type of a decoded record and of call parameters). */
export type XdrReader = NonNullable<ReturnType<RmRecordDecoder['readRecord']>>;

export interface RpcCall {
  xid: number;
  prog: number;
  vers: number;
  proc: number;
  credFlavor: number;
  /** Present when the credential is AUTH_SYS and well-formed. */
  auth: AuthSys | undefined;
  /** The procedure's arguments (undefined when empty). */
  params: XdrReader | undefined;
  peer: { address: string; port: number };
  /** The server's address the call arrived at (rpcbind's universal addresses), when known. */
  local?: string;
  /** Aborted when the client's connection closes (TCP): work waiting for it can stop. */
  signal?: AbortSignal;
}

export type RpcResult =
  /** `sent` runs once the socket no longer needs the body (written, or the connection is gone). */
  | { kind: 'success'; body?: Uint8Array[]; sent?: () => void }
  | { kind: 'prog-unavail' | 'proc-unavail' | 'garbage-args' | 'system-err' }
  | { kind: 'prog-mismatch'; low: number; high: number }
  | { kind: 'auth-error'; authStat: number }
  /** The call's RPC version is not 2 (MSG_DENIED / RPC_MISMATCH). */
  | { kind: 'rpc-mismatch' };

export interface RpcProgram {
  readonly prog: number;
  readonly name: string;
  readonly low: number;
  readonly high: number;
  call(call: RpcCall): Promise<RpcResult> | RpcResult;
}

export const success = (...body: Uint8Array[]): RpcResult => ({ kind: 'success', body });

const decoder = new RpcMessageDecoder();

export type Decoded = { kind: 'call'; call: RpcCall } | { kind: 'reject'; xid: number | undefined; result: RpcResult };

/** A record (TCP) or datagram (UDP) -> a call, or what to answer instead (nothing when no XID). */
export function decodeCall(rec: XdrReader, peer: { address: string; port: number }): Decoded {
  const bytes = rec.size();
  const head = rec.subarray(0, Math.min(4, bytes));
  const xid = bytes >= 4 ? ((head[0]! << 24) | (head[1]! << 16) | (head[2]! << 8) | head[3]!) >>> 0 : undefined;
  let msg;
  try {
    msg = decoder.decodeMessage(rec);
    if (rec.size() < 0) msg = undefined; // json-pack's Reader ran past the record
  } catch {
    msg = undefined;
  }
  if (!(msg instanceof RpcCallMessage)) {
    // A reply (ignored), or a call whose header cannot be decoded: GARBAGE_ARGS.
    return { kind: 'reject', xid: msg === undefined ? xid : undefined, result: { kind: 'garbage-args' } };
  }
  if (msg.rpcvers !== RPC_VERSION) return { kind: 'reject', xid: msg.xid, result: { kind: 'rpc-mismatch' } };
  return {
    kind: 'call',
    call: {
      xid: msg.xid,
      prog: msg.prog,
      vers: msg.vers,
      proc: msg.proc,
      credFlavor: msg.cred.flavor,
      auth: msg.cred.flavor === AuthFlavor.AUTH_SYS ? parseAuthSys(msg.cred.body.subarray(0, msg.cred.body.size())) : undefined,
      params: msg.params,
      peer,
    },
  };
}

/** Runs a call against its program (PROG_UNAVAIL / PROG_MISMATCH when there is none). */
export function callProgram(programs: ReadonlyMap<number, RpcProgram>, call: RpcCall, log: Logger): RpcResult | Promise<RpcResult> {
  const program = programs.get(call.prog);
  if (!program) return { kind: 'prog-unavail' };
  if (call.vers < program.low || call.vers > program.high) return { kind: 'prog-mismatch', low: program.low, high: program.high };
  try {
    return program.call(call);
  } catch (err) {
    log.error('RPC handler threw', { prog: call.prog, proc: call.proc, err: errorText(err) });
    return { kind: 'system-err' };
  }
}

/** Reply header (with 4 bytes reserved in front for the record mark) and body parts. */
export function encodeResult(xid: number, r: RpcResult): { head: Buffer; body: Uint8Array[] } {
  switch (r.kind) {
    case 'success':
      return { head: encodeAccepted(xid, AcceptStat.SUCCESS), body: r.body ?? [] };
    case 'prog-unavail':
      return { head: encodeAccepted(xid, AcceptStat.PROG_UNAVAIL), body: [] };
    case 'proc-unavail':
      return { head: encodeAccepted(xid, AcceptStat.PROC_UNAVAIL), body: [] };
    case 'garbage-args':
      return { head: encodeAccepted(xid, AcceptStat.GARBAGE_ARGS), body: [] };
    case 'system-err':
      return { head: encodeAccepted(xid, AcceptStat.SYSTEM_ERR), body: [] };
    case 'prog-mismatch': {
      const h = encodeAccepted(xid, AcceptStat.PROG_MISMATCH, 8);
      h.writeUInt32BE(r.low, 28);
      h.writeUInt32BE(r.high, 32);
      return { head: h, body: [] };
    }
    case 'auth-error':
      return { head: encodeDenied(xid, RejectStat.AUTH_ERROR, [r.authStat]), body: [] };
    case 'rpc-mismatch':
      return { head: encodeDenied(xid, RejectStat.RPC_MISMATCH, [RPC_VERSION, RPC_VERSION]), body: [] };
  }
}

function encodeAccepted(xid: number, stat: number, extra = 0): Buffer {
  const h = Buffer.allocUnsafe(28 + extra);
  h.writeUInt32BE(xid >>> 0, 4);
  h.writeUInt32BE(MsgType.REPLY, 8);
  h.writeUInt32BE(ReplyStat.MSG_ACCEPTED, 12);
  h.writeUInt32BE(AuthFlavor.AUTH_NONE, 16);
  h.writeUInt32BE(0, 20);
  h.writeUInt32BE(stat, 24);
  return h;
}

function encodeDenied(xid: number, rejectStat: number, words: number[]): Buffer {
  const h = Buffer.allocUnsafe(20 + 4 * words.length);
  h.writeUInt32BE(xid >>> 0, 4);
  h.writeUInt32BE(MsgType.REPLY, 8);
  h.writeUInt32BE(ReplyStat.MSG_DENIED, 12);
  h.writeUInt32BE(rejectStat, 16);
  words.forEach((w, i) => h.writeUInt32BE(w, 20 + 4 * i));
  return h;
}

/** A json-pack Reader over one datagram (through the record decoder: no direct dependency on its buffers package). */
export function datagramReader(msg: Buffer): XdrReader | undefined {
  const rm = new RmRecordDecoder();
  const mark = Buffer.allocUnsafe(4);
  mark.writeUInt32BE((0x80000000 | msg.length) >>> 0, 0);
  rm.push(mark);
  rm.push(msg);
  return rm.readRecord();
}
