/**
 * ApiClient: the HTTP client the CLI uses to talk to a running daemon, over http:// or https://
 * (a private CA given as `ca`). Every request carries `Authorization: Bearer TOKEN` when a token
 * is given. API errors come back as ReboundErrors with the server's code and message; a 401 adds
 * `authHint` (how to pass a token); an unreachable daemon is ERR_SERVER_UNREACHABLE with a hint
 * on how to point the CLI at it.
 *
 * node:http(s) rather than fetch: Node's fetch cannot be given a CA without the undici package.
 */
import http from 'node:http';
import https from 'node:https';
import { ERROR_CODES, ReboundError, type ErrorCode } from '../errors.js';
import { DEFAULT_HTTP_PORT } from '../config/schema.js';

export const DEFAULT_SERVER_URL = `http://127.0.0.1:${DEFAULT_HTTP_PORT}`;

export interface ApiClientOptions {
  /** Bearer token for every request. */
  token?: string;
  /** PEM CA certificate(s) to trust for https:// (a private CA). */
  ca?: Buffer | string;
  /** Added to the message of a 401: how to pass a token. */
  authHint?: string;
  /** Per-request timeout, ms (default none). */
  timeoutMs?: number;
}

export class ApiClient {
  readonly baseUrl: string;
  readonly #opts: ApiClientOptions;

  constructor(baseUrl: string = DEFAULT_SERVER_URL, opts: ApiClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#opts = opts;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let url: URL;
    try {
      url = new URL(this.baseUrl + path);
    } catch (err) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `the server URL '${this.baseUrl}' is not a URL (http://HOST:PORT or https://HOST:PORT)`, { cause: err });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `the server URL '${this.baseUrl}' must start with http:// or https://`);
    }
    let res: { status: number; text: string };
    try {
      res = await this.#send(url, method, body);
    } catch (err) {
      const e = err as { code?: string; message?: string };
      const cause = e.code ?? e.message ?? String(err);
      const tlsHint = /CERT|SELF_SIGNED|UNABLE_TO|TLS|SSL|EPROTO/i.test(cause)
        ? ' The TLS handshake failed: trust the daemon\'s CA with --ca-cert FILE or REBOUND_CA_CERT (its tlsCertDir/ca-cert.pem), and use the name in its certificate.'
        : '';
      throw new ReboundError(
        'ERR_SERVER_UNREACHABLE',
        `cannot reach the rebound daemon at ${this.baseUrl} (${cause}); is 'rebound serve' running? ` +
          'Point the CLI at it with --server URL or REBOUND_SERVER.' +
          tlsHint,
        { cause: err },
      );
    }
    let data: unknown;
    try {
      data = res.text ? JSON.parse(res.text) : undefined;
    } catch {
      throw new ReboundError('ERR_INTERNAL', `the daemon answered ${res.status} with non-JSON: ${res.text.slice(0, 200)}`);
    }
    if (res.status < 200 || res.status >= 300) {
      const e = (data as { error?: { code?: string; message?: string; details?: Record<string, unknown> } })?.error;
      const code = e?.code && e.code in ERROR_CODES ? (e.code as ErrorCode) : 'ERR_INTERNAL';
      let message = e?.message ?? `HTTP ${res.status}`;
      if (code === 'ERR_UNAUTHENTICATED' && this.#opts.authHint) message = `${message}\n${this.#opts.authHint}`;
      throw new ReboundError(code, message, { details: e?.details });
    }
    return data as T;
  }

  #send(url: URL, method: string, body: unknown): Promise<{ status: number; text: string }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = {};
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    if (this.#opts.token) headers.authorization = `Bearer ${this.#opts.token}`;
    return new Promise((resolve, reject) => {
      const options: https.RequestOptions = { method, headers, ...(url.protocol === 'https:' && this.#opts.ca ? { ca: this.#opts.ca } : {}) };
      const req = (url.protocol === 'https:' ? https : http).request(url, options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('error', reject);
      if (this.#opts.timeoutMs) req.setTimeout(this.#opts.timeoutMs, () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
      req.end(payload);
    });
  }
}
