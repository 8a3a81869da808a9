/**
 * The HTTP API's one error mapper: any failure -> HTTP status + `{error: {code, message}}`.
 */
import { BlockError, errorText, isBlockError, isReboundError } from '../errors.js';

export interface ApiErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

const BLOCK_STATUS: Record<BlockError['code'], number> = {
  EPERM: 403,
  EROFS: 403,
  EINVAL: 400,
  EOVERFLOW: 400,
  ENOSPC: 507,
  ENOTSUP: 501,
  EIO: 500,
  ESHUTDOWN: 503,
};

export function toApiError(err: unknown): { status: number; body: ApiErrorBody } {
  if (isReboundError(err)) {
    return { status: err.status, body: { error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) } } };
  }
  if (isBlockError(err)) {
    return { status: BLOCK_STATUS[err.code], body: { error: { code: err.code, message: err.message } } };
  }
  const e = err as { statusCode?: number; validation?: unknown; code?: string };
  if (e && typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    // Fastify's own client errors: bad JSON, wrong content type, ...
    return { status: e.statusCode, body: { error: { code: 'ERR_INVALID_ARGUMENT', message: errorText(err) } } };
  }
  return { status: 500, body: { error: { code: 'ERR_INTERNAL', message: errorText(err) } } };
}
