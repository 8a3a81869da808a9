/**
 * NBD protocol constants (NetworkBlockDevice/nbd doc/proto.md). Names follow the spec without the
 * NBD_ prefix. Everything on the wire is big-endian.
 */

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const CLIENT_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const CLIENT_FLAG_NO_ZEROES = 1 << 1;
export const KNOWN_CLIENT_FLAGS = CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES;

export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags. */
export const TFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

export const ReplyFlag = { DONE: 1 << 0 } as const;

export const ChunkType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** NBD error values (§Error values). */
export const NbdErrno = {
  OK: 0,
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

export const BASE_ALLOCATION = 'base:allocation';

export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const CHUNK_HEADER_BYTES = 20;

/** Largest request payload we accept (the spec's recommended maximum). */
export const MAX_PAYLOAD = 64 * 1024 * 1024;
/** Largest option payload we read during the handshake; bigger ones are refused (ERR_TOO_BIG). */
export const MAX_OPTION_BYTES = 64 * 1024;
/** Options beyond this are not even read: the connection is dropped (DoS guard). */
export const MAX_OPTION_DISCARD_BYTES = 4 * 1024 * 1024;
/** Longest export name (spec: 4096 bytes). */
export const MAX_NAME_BYTES = 4096;
/** Error messages must stay short: QEMU rejects non-data chunks over 1000 bytes. */
export const MAX_ERROR_MESSAGE_BYTES = 200;
/** Descriptors per BLOCK_STATUS reply (spec allows 2^20; QEMU only needs one). */
export const MAX_EXTENT_DESCRIPTORS = 2048;

export function optionName(opt: number): string {
  for (const [k, v] of Object.entries(Opt)) if (v === opt) return k;
  return `OPT_${opt}`;
}

export function commandName(cmd: number): string {
  for (const [k, v] of Object.entries(Cmd)) if (v === cmd) return k;
  return `CMD_${cmd}`;
}
