/**
 * The one registry of rebound's errors.
 *
 * Three kinds of failure exist (DESIGN.md §4):
 *  - programmer mistakes: plain TypeError/RangeError/assert, never sent to a client;
 *  - block I/O errors: `BlockError` with a POSIX code; every front end maps them with its
 *    one mapping function (nbd/error-map.ts, api/error-map.ts, ...);
 *  - domain errors: `ReboundError` with a stable `ERR_*` code from `ERROR_CODES` below.
 *
 * `docs/errors.md` lists every code; a unit test keeps the two in step.
 */

export const BLOCK_ERROR_CODES = [
  'EPERM',
  'EIO',
  'EINVAL',
  'ENOSPC',
  'EROFS',
  'EOVERFLOW',
  'ENOTSUP',
  'ESHUTDOWN',
] as const;
export type BlockErrorCode = (typeof BLOCK_ERROR_CODES)[number];

/** A failed block I/O request. The message is short: front ends may send it to clients. */
export class BlockError extends Error {
  readonly code: BlockErrorCode;
  constructor(code: BlockErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BlockError';
    this.code = code;
  }
}

export function isBlockError(err: unknown): err is BlockError {
  return err instanceof BlockError;
}

interface ErrorSpec {
  /** HTTP status the API answers with. */
  status: number;
  /** One-line description for docs/errors.md; the thrown message carries the specifics. */
  summary: string;
}

export const ERROR_CODES = {
  ERR_INVALID_ARGUMENT: { status: 400, summary: 'A command-line option, config value or API field is malformed.' },
  ERR_INVALID_SIZE: { status: 400, summary: 'A size is not a number with an optional K/M/G/T suffix.' },
  ERR_INVALID_ADDRESS: { status: 400, summary: 'A listen address is not HOST:PORT, [IPv6]:PORT or PORT.' },
  ERR_INVALID_EXPORT_SPEC: { status: 400, summary: 'An --export value is not NAME=SOURCE[,OPTION...].' },
  ERR_EXPORT_EXISTS: { status: 409, summary: 'An export with that name is already registered.' },
  ERR_EXPORT_NOT_FOUND: { status: 404, summary: 'No export has that name.' },
  ERR_SOURCE_OPEN_FAILED: { status: 400, summary: 'An export source (image file, device) could not be opened.' },
  ERR_DATA_DIR_LOCKED: { status: 409, summary: 'Another rebound daemon owns the data directory.' },
  ERR_DATA_DIR_UNUSABLE: { status: 500, summary: 'The data directory cannot be created or written.' },
  ERR_LISTEN_FAILED: { status: 500, summary: 'A listener (NBD, HTTP) could not bind its address.' },
  ERR_OVERLAY_CORRUPT: { status: 500, summary: 'An overlay directory is damaged (header or map unreadable).' },
  ERR_OVERLAY_VERSION: { status: 500, summary: 'An overlay was written in a format version this rebound cannot read.' },
  ERR_OVERLAY_BASE_MISMATCH: { status: 409, summary: 'An existing overlay belongs to a different base image (size or identity differ).' },
  ERR_REPO_CORRUPT: { status: 500, summary: 'A repository file (repo.json, an index, a manifest) is damaged or of an unknown version.' },
  ERR_REPO_IO: { status: 500, summary: 'The repository could not be read or written (I/O error).' },
  ERR_REPO_FULL: { status: 507, summary: "The repository's filesystem is full." },
  ERR_REPO_UNREACHABLE: { status: 503, summary: 'The object store (S3 endpoint) did not answer, or kept failing, for longer than the retry limit (s3RetryTime); reads then fail with EIO.' },
  ERR_REPO_KEY: { status: 400, summary: 'An encrypted repository cannot be opened with the key given: no key file, a file that is not a key, or a key whose fingerprint is not the one in the repository descriptor (repo.json); also a key given for a repository that is not encrypted.' },
  ERR_REPO_BUSY: { status: 409, summary: 'Another gateway holds the repository\'s maintenance lease (gc or prune on a shared S3 repository); try again when it is done.' },
  ERR_CHUNK_CORRUPT: { status: 500, summary: 'A stored chunk does not match its digest (bit rot, tampering); verify names the restore points it breaks.' },
  ERR_CHUNK_MISSING: { status: 500, summary: 'A chunk referenced by a restore point is missing from the repository.' },
  ERR_VM_NOT_FOUND: { status: 404, summary: 'The repository holds no backups of that VM.' },
  ERR_POINT_NOT_FOUND: { status: 404, summary: 'The VM has no restore point with that id.' },
  ERR_DISK_NOT_FOUND: { status: 404, summary: 'The restore point has no disk with that name.' },
  ERR_CONFIG_FILE_NOT_FOUND: { status: 404, summary: 'The restore point has no VM config file with that name.' },
  ERR_SESSION_NOT_FOUND: { status: 404, summary: 'No recovery session has that name.' },
  ERR_SESSION_EXISTS: { status: 409, summary: 'A recovery session with that name already exists.' },
  ERR_SESSION_STATE: { status: 409, summary: 'The session is not in a state that allows the request (e.g. migrating, switched, target incomplete).' },
  ERR_PARTITION_TABLE: { status: 422, summary: "The disk's partition table (MBR or GPT) is malformed or points outside the disk." },
  ERR_MOUNT_FAILED: { status: 500, summary: 'The FUSE file tree could not be mounted or unmounted (missing /dev/fuse, busy mount point).' },
  ERR_MOUNT_DIR_NOT_ALLOWED: { status: 400, summary: 'A FUSE mount directory is `/` or at or under /proc, /sys, /dev or /run (after resolving symlinks).' },
  ERR_MOUNT_NOT_FOUND: { status: 404, summary: 'The daemon has no FUSE file tree mounted at that directory.' },
  ERR_BACKUP_SOURCE: { status: 400, summary: 'A backup source cannot be read (missing file, unreachable NBD server, missing dirty bitmap).' },
  ERR_PATH_NOT_ALLOWED: { status: 403, summary: 'An API request names a path outside the directories the admin allowed: backup sources and config files below sourceDirs (--source-dir), restore and migration targets below targetDirs (--target-dir); symlinks resolved, block devices only when listed exactly.' },
  ERR_JOB_NOT_FOUND: { status: 404, summary: 'No job has that id (finished jobs are kept for a while, then forgotten).' },
  ERR_JOB_CANCELLED: { status: 409, summary: 'The job was cancelled (by request or because the daemon stopped).' },
  ERR_TARGET_OPEN_FAILED: {
    status: 400,
    summary: 'A restore or migration target cannot be opened: a path that cannot be created, a block device or NBD export too small or read-only, an unreachable NBD server.',
  },
  ERR_TARGET_IO: { status: 502, summary: 'A restore or migration target failed once open: I/O error, out of space, or its NBD server went away.' },
  ERR_TLS_CREDENTIALS: { status: 400, summary: 'TLS credentials cannot be used: a file of the certificate directory (--tls-certificates) is missing, unreadable or malformed, the key does not match the certificate, or the PSK file (--tls-psk) has a bad line.' },
  ERR_SERVER_UNREACHABLE: { status: 503, summary: 'The CLI could not reach the daemon\'s HTTP API.' },
  ERR_HOST_NOT_ALLOWED: { status: 421, summary: 'The HTTP Host header is not a name the daemon answers to (loopback, its listen address); guards against DNS rebinding.' },
  ERR_ORIGIN_NOT_ALLOWED: { status: 403, summary: 'A write request to the API came from another web origin (a page in a browser); it is refused.' },
  ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, summary: 'A write request to the API has a body that is not JSON (Content-Type must be application/json).' },
  ERR_NOT_FOUND: { status: 404, summary: 'No API route matches the request.' },
  ERR_UNAUTHENTICATED: { status: 401, summary: 'An API request has no bearer token, or one that is not a token of this daemon (revoked, mistyped); see docs/security.md, Tokens and roles.' },
  ERR_FORBIDDEN: { status: 403, summary: "The API token's role lacks the route's permission, or the request names a VM outside the token's VM patterns." },
  ERR_TOO_MANY_REQUESTS: { status: 429, summary: 'Too many requests with bad API tokens from this client address; wait for Retry-After seconds.' },
  ERR_TOKEN_NOT_FOUND: { status: 404, summary: 'No API token has that id (rebound token list).' },
  ERR_VERIFY_UNAVAILABLE: { status: 503, summary: 'A verification boot cannot run: QEMU is missing or failed to start, its monitor did not answer, or the firmware the VM needs (OVMF for UEFI) is not installed.' },
  ERR_VERIFY_FAILED: { status: 422, summary: 'A restore point did not boot: a verification boot ended without every required signal (serial pattern, TCP port, agent, probe script, screen); the result says which.' },
  ERR_INTERNAL: { status: 500, summary: 'An unexpected failure; the log has details.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** A domain error with a stable code. */
export class ReboundError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ReboundError';
    this.code = code;
    this.details = options?.details;
  }
  get status(): number {
    return ERROR_CODES[this.code].status;
  }
}

export function isReboundError(err: unknown): err is ReboundError {
  return err instanceof ReboundError;
}

/** Best-effort text of any thrown value, for logs. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
