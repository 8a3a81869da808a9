/**
 * The iSCSI front end's one error mapper: any failure of a device request -> SCSI sense (key,
 * ASC/ASCQ). EROFS/EPERM are DATA PROTECT / WRITE PROTECTED; ENOSPC is the thin-provisioning
 * answer (DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT); an out-of-range request that the
 * SCSI layer did not catch is LBA OUT OF RANGE; ESHUTDOWN (a revoked disk, a stopping daemon) is
 * NOT READY; anything that is not a BlockError is a bug and becomes HARDWARE ERROR / INTERNAL
 * TARGET FAILURE (logged by the gate's onUnexpectedError).
 */
import { isBlockError, type BlockErrorCode } from '../errors.js';
import { Asc, ScsiError, SenseKey } from './sense.js';

type Mapping = [number, readonly [number, number]];

const READ: Record<BlockErrorCode, Mapping> = {
  EPERM: [SenseKey.DataProtect, Asc.WriteProtected],
  EROFS: [SenseKey.DataProtect, Asc.WriteProtected],
  EIO: [SenseKey.MediumError, Asc.UnrecoveredReadError],
  EINVAL: [SenseKey.IllegalRequest, Asc.LbaOutOfRange],
  EOVERFLOW: [SenseKey.IllegalRequest, Asc.InvalidFieldInCdb],
  ENOSPC: [SenseKey.DataProtect, Asc.SpaceAllocationFailedWriteProtect],
  ENOTSUP: [SenseKey.IllegalRequest, Asc.InvalidCommandOperationCode],
  ESHUTDOWN: [SenseKey.NotReady, Asc.NotReadyCauseNotReportable],
};

/** A device failure as the ScsiError the command answers with. `write`: EIO is a WRITE ERROR. */
export function toScsiError(err: unknown, write = false): ScsiError {
  if (err instanceof ScsiError) return err;
  if (isBlockError(err)) {
    if (write && err.code === 'EIO') return new ScsiError(SenseKey.MediumError, Asc.WriteError, err.message);
    const [key, asc] = READ[err.code];
    return new ScsiError(key, asc, err.message);
  }
  return new ScsiError(SenseKey.HardwareError, Asc.InternalTargetFailure, 'internal target failure');
}
