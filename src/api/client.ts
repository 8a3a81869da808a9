/**
 * ApiClient: the HTTP client the CLI uses to talk to a running daemon. API errors come back as
 * ReboundErrors with the server's code and message; an unreachable daemon is ERR_SERVER_UNREACHABLE
 * with a hint on how to point the CLI at it.
 */
import { ERROR_CODES, ReboundError, type ErrorCode } from '../errors.js';
import { DEFAULT_HTTP_PORT } from '../config/schema.js';

export const DEFAULT_SERVER_URL = `http://127.0.0.1:${DEFAULT_HTTP_PORT}`;

export class ApiClient {
  readonly baseUrl: string;

  constructor(baseUrl: string = DEFAULT_SERVER_URL) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new ReboundError(
        'ERR_SERVER_UNREACHABLE',
        `cannot reach the rebound daemon at ${this.baseUrl} (${cause}); is 'rebound serve' running? ` +
          'Point the CLI at it with --server URL or REBOUND_SERVER.',
        { cause: err },
      );
    }
    const text = await res.text();
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      throw new ReboundError('ERR_INTERNAL', `the daemon answered ${res.status} with non-JSON: ${text.slice(0, 200)}`);
    }
    if (!res.ok) {
      const e = (data as { error?: { code?: string; message?: string; details?: Record<string, unknown> } })?.error;
      const code = e?.code && e.code in ERROR_CODES ? (e.code as ErrorCode) : 'ERR_INTERNAL';
      throw new ReboundError(code, e?.message ?? `HTTP ${res.status}`, { details: e?.details });
    }
    return data as T;
  }
}
