/** ONC RPC v2 numbers (RFC 5531) and the program numbers rebound serves. */

export const RPC_VERSION = 2;

export const MsgType = { CALL: 0, REPLY: 1 } as const;
export const ReplyStat = { MSG_ACCEPTED: 0, MSG_DENIED: 1 } as const;
export const AcceptStat = {
  SUCCESS: 0,
  PROG_UNAVAIL: 1,
  PROG_MISMATCH: 2,
  PROC_UNAVAIL: 3,
  GARBAGE_ARGS: 4,
  SYSTEM_ERR: 5,
} as const;
export const RejectStat = { RPC_MISMATCH: 0, AUTH_ERROR: 1 } as const;
export const AuthStat = { AUTH_OK: 0, AUTH_BADCRED: 1, AUTH_REJECTEDCRED: 2, AUTH_BADVERF: 3, AUTH_REJECTEDVERF: 4, AUTH_TOOWEAK: 5 } as const;
export const AuthFlavor = { AUTH_NONE: 0, AUTH_SYS: 1 } as const;

export const PROG_PORTMAP = 100000;
export const PROG_NFS = 100003;
export const PROG_MOUNT = 100005;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/**
 * Room in an RPC record beyond a WRITE's data: RPC header, credential and verifier (up to 400
 * bytes each), file handle, offset, count, stable, data length, with room to spare.
 */
export const RECORD_OVERHEAD = 64 * 1024;

/**
 * Largest RPC record accepted, all its fragments together, for a server whose largest WRITE
 * (FSINFO wtmax, nfsMaxIoSize) is `maxIo`: that WRITE and its headers. A connection sending a
 * larger record — finished or not — is dropped, as knfsd drops a record over its max payload.
 */
export function recordLimit(maxIo: number): number {
  return maxIo + RECORD_OVERHEAD;
}

/** The record cap of the default nfsMaxIoSize (1 MiB; nfs3/context.ts MAX_IO). */
export const MAX_RECORD_BYTES = recordLimit(1024 * 1024);
