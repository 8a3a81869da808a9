/**
 * The NFS front end's one error mapper: any failure of a procedure -> nfsstat3 (RFC 1813 §2.6).
 * BlockErrors map by POSIX code, ReboundErrors by domain code, Node system errors (files the
 * hypervisor created) by errno; anything else is a bug and becomes NFS3ERR_SERVERFAULT.
 */
import { isBlockError, isReboundError, type BlockErrorCode, type ErrorCode } from '../errors.js';

export const Nfs3Stat = {
  OK: 0,
  PERM: 1,
  NOENT: 2,
  IO: 5,
  NXIO: 6,
  ACCES: 13,
  EXIST: 17,
  XDEV: 18,
  NODEV: 19,
  NOTDIR: 20,
  ISDIR: 21,
  INVAL: 22,
  FBIG: 27,
  NOSPC: 28,
  ROFS: 30,
  MLINK: 31,
  NAMETOOLONG: 63,
  NOTEMPTY: 66,
  DQUOT: 69,
  STALE: 70,
  REMOTE: 71,
  BADHANDLE: 10001,
  NOT_SYNC: 10002,
  BAD_COOKIE: 10003,
  NOTSUPP: 10004,
  TOOSMALL: 10005,
  SERVERFAULT: 10006,
  BADTYPE: 10007,
  JUKEBOX: 10008,
} as const;
export type Nfs3StatValue = (typeof Nfs3Stat)[keyof typeof Nfs3Stat];

/** A failure with a definite NFS status, thrown inside the datastore and the procedures. */
export class NfsError extends Error {
  readonly stat: Nfs3StatValue;
  constructor(stat: Nfs3StatValue, message: string) {
    super(message);
    this.name = 'NfsError';
    this.stat = stat;
  }
}

const FROM_BLOCK: Record<BlockErrorCode, Nfs3StatValue> = {
  EPERM: Nfs3Stat.PERM,
  EROFS: Nfs3Stat.ROFS,
  EIO: Nfs3Stat.IO,
  EINVAL: Nfs3Stat.INVAL,
  ENOSPC: Nfs3Stat.NOSPC,
  EOVERFLOW: Nfs3Stat.FBIG,
  ENOTSUP: Nfs3Stat.NOTSUPP,
  // The daemon is stopping: "try again later" lets the client retry against the restarted daemon.
  ESHUTDOWN: Nfs3Stat.JUKEBOX,
};

const FROM_DOMAIN: Partial<Record<ErrorCode, Nfs3StatValue>> = {
  ERR_SESSION_NOT_FOUND: Nfs3Stat.STALE,
  ERR_POINT_NOT_FOUND: Nfs3Stat.STALE,
  ERR_VM_NOT_FOUND: Nfs3Stat.STALE,
  ERR_DISK_NOT_FOUND: Nfs3Stat.STALE,
  ERR_CONFIG_FILE_NOT_FOUND: Nfs3Stat.NOENT,
  ERR_CHUNK_CORRUPT: Nfs3Stat.IO,
  ERR_CHUNK_MISSING: Nfs3Stat.IO,
  ERR_REPO_IO: Nfs3Stat.IO,
  ERR_REPO_CORRUPT: Nfs3Stat.IO,
  ERR_REPO_FULL: Nfs3Stat.NOSPC,
  ERR_SESSION_STATE: Nfs3Stat.JUKEBOX,
};

const FROM_ERRNO: Record<string, Nfs3StatValue> = {
  ENOENT: Nfs3Stat.NOENT,
  EEXIST: Nfs3Stat.EXIST,
  ENOTDIR: Nfs3Stat.NOTDIR,
  EISDIR: Nfs3Stat.ISDIR,
  ENOTEMPTY: Nfs3Stat.NOTEMPTY,
  ENOSPC: Nfs3Stat.NOSPC,
  EDQUOT: Nfs3Stat.DQUOT,
  EACCES: Nfs3Stat.ACCES,
  EPERM: Nfs3Stat.PERM,
  EROFS: Nfs3Stat.ROFS,
  ENAMETOOLONG: Nfs3Stat.NAMETOOLONG,
  EFBIG: Nfs3Stat.FBIG,
  EXDEV: Nfs3Stat.XDEV,
  EINVAL: Nfs3Stat.INVAL,
  EMLINK: Nfs3Stat.MLINK,
  ESTALE: Nfs3Stat.STALE,
  EIO: Nfs3Stat.IO,
};

export function toNfsStat(err: unknown): Nfs3StatValue {
  if (err instanceof NfsError) return err.stat;
  if (isBlockError(err)) return FROM_BLOCK[err.code];
  if (isReboundError(err)) return FROM_DOMAIN[err.code] ?? Nfs3Stat.SERVERFAULT;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code in FROM_ERRNO) return FROM_ERRNO[code]!;
  return Nfs3Stat.SERVERFAULT;
}
