/**
 * The FUSE front end's one error mapper (DESIGN §4): any failure -> a negative Linux errno for
 * the kernel. Block errors keep their POSIX meaning; domain errors map by kind (not found ->
 * ENOENT, a malformed partition table or corrupt chunk -> EIO); anything else is EIO.
 */
import { BlockError, isBlockError, isReboundError, type ErrorCode } from '../errors.js';

/** Linux errno values (negative, as FUSE wants them). */
export const Errno = {
  EPERM: -1,
  ENOENT: -2,
  EIO: -5,
  EBADF: -9,
  EACCES: -13,
  EBUSY: -16,
  ENOTDIR: -20,
  EISDIR: -21,
  EINVAL: -22,
  ENOSPC: -28,
  EROFS: -30,
  ENOTSUP: -95,
  EOVERFLOW: -75,
  ESHUTDOWN: -108,
  ETIMEDOUT: -110,
} as const;

const BLOCK_ERRNO: Record<BlockError['code'], number> = {
  EPERM: Errno.EPERM,
  EIO: Errno.EIO,
  EINVAL: Errno.EINVAL,
  ENOSPC: Errno.ENOSPC,
  EROFS: Errno.EROFS,
  EOVERFLOW: Errno.EOVERFLOW,
  ENOTSUP: Errno.ENOTSUP,
  ESHUTDOWN: Errno.EIO, // the device went away under an open file: an I/O error to the reader
};

const NOT_FOUND: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'ERR_VM_NOT_FOUND',
  'ERR_POINT_NOT_FOUND',
  'ERR_DISK_NOT_FOUND',
  'ERR_CONFIG_FILE_NOT_FOUND',
  'ERR_SESSION_NOT_FOUND',
  'ERR_EXPORT_NOT_FOUND',
  'ERR_NOT_FOUND',
]);

/** Maps any thrown value to a negative errno. */
export function toFuseErrno(err: unknown): number {
  if (isBlockError(err)) return BLOCK_ERRNO[err.code];
  if (isReboundError(err)) return NOT_FOUND.has(err.code) ? Errno.ENOENT : Errno.EIO;
  const code = (err as { code?: unknown } | undefined)?.code;
  if (code === 'ENOENT') return Errno.ENOENT;
  return Errno.EIO;
}
