/**
 * The NBD front end's one error mapper: any failure of a request -> NBD error value + short message.
 * EROFS becomes EPERM (the spec's answer to a write on a read-only export); anything that is not a
 * BlockError is a bug or an unexpected system error and becomes EIO.
 */
import { errorText, isBlockError, type BlockErrorCode } from '../errors.js';
import { NbdErrno } from './protocol.js';

const TO_NBD: Record<BlockErrorCode, number> = {
  EPERM: NbdErrno.EPERM,
  EROFS: NbdErrno.EPERM,
  EIO: NbdErrno.EIO,
  EINVAL: NbdErrno.EINVAL,
  ENOSPC: NbdErrno.ENOSPC,
  EOVERFLOW: NbdErrno.EOVERFLOW,
  ENOTSUP: NbdErrno.ENOTSUP,
  ESHUTDOWN: NbdErrno.ESHUTDOWN,
};

export interface NbdFailure {
  errno: number;
  message: string;
}

export function toNbdError(err: unknown): NbdFailure {
  if (isBlockError(err)) return { errno: TO_NBD[err.code], message: err.message };
  return { errno: NbdErrno.EIO, message: `internal error: ${errorText(err)}` };
}
