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
 * Largest RPC record accepted, all its fragments together (bytes): the largest WRITE the server
 * advertises (FSINFO wtmax = MAX_IO, 1 MiB, nfs3/context.ts) plus headers, with room to spare.
 * A connection sending a larger record — finished or not — is dropped. Keep above MAX_IO + 64 KiB.
 */
export const MAX_RECORD_BYTES = 4 * 1024 * 1024;
