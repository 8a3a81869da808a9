/**
 * S3Objects: the few object operations the S3 repository needs (get, head, put, conditional
 * create, delete, list) over @aws-sdk/client-s3 (GET and PUT on their own signed requests: s3-signed-http.ts),
 * with rebound's own retry policy.
 *
 * Design notes:
 *  - The SDK's retries are off (maxAttempts 1); every call retries here instead, with exponential
 *    backoff (200 ms doubling to 5 s, with jitter) until `retryMs` has passed since the call began:
 *    a 10-second endpoint restart makes a read wait, not fail. What is retried: network errors
 *    (refused, reset, timeouts), HTTP 5xx (503 SlowDown is throttling: the backoff respects it),
 *    429 and RequestTimeout. A definite answer (404, 403, 400, 412) is not retried. After the limit
 *    the call fails with ERR_REPO_UNREACHABLE (an export's read gets EIO, a backup fails).
 *  - Each request has a timeout (connect 5 s, whole request 60 s): a hung endpoint counts as down.
 *  - Conditional create is `If-None-Match: *` (AWS S3 since 2024, Ceph RGW — measured on 16.2.15:
 *    a second create answers 412). It is what leases and point ids rely on.
 *  - Counters (requests by kind, bytes in and out, retries) feed `rebound repo info` and the bench.
 */
import {
  DeleteObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { ReboundError } from '../errors.js';
import type { S3Link } from './s3-link.js';
import { SignedHttp } from './s3-signed-http.js';

export interface ObjectInfo {
  key: string;
  size: number;
  mtimeMs: number;
  etag?: string;
}

export interface S3Counters {
  get: number;
  head: number;
  put: number;
  delete: number;
  list: number;
  retries: number;
  bytesIn: number;
  bytesOut: number;
}

export interface S3ObjectsOptions {
  /** How long one operation keeps retrying before it fails, ms. */
  retryMs: number;
  /** Called when an operation starts retrying and when it gives up (logging). */
  onRetry?: (what: string, err: unknown, attempt: number) => void;
  /** Credentials for this client only (the CLI's environment), unless the link has its own. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

const BACKOFF_FIRST_MS = 200;
const BACKOFF_MAX_MS = 5000;

export class S3Objects {
  readonly bucket: string;
  /** Key prefix, '' or ending in '/'. */
  readonly prefix: string;
  readonly counters: S3Counters = { get: 0, head: 0, put: 0, delete: 0, list: 0, retries: 0, bytesIn: 0, bytesOut: 0 };
  readonly #client: S3Client;
  /** GETs and PUTs of objects (the hot path: backups, restores, boots) go around the SDK's command stack (s3-signed-http.ts). */
  readonly #http: SignedHttp;
  readonly #opts: S3ObjectsOptions;
  readonly #storageClass: string | undefined;

  constructor(link: S3Link, opts: S3ObjectsOptions) {
    this.bucket = link.bucket;
    this.prefix = link.prefix;
    this.#opts = opts;
    this.#storageClass = link.storageClass;
    const config: S3ClientConfig = {
      endpoint: link.endpoint,
      region: link.region,
      forcePathStyle: link.addressing === 'path',
      maxAttempts: 1,
      requestHandler: { connectionTimeout: 5000, requestTimeout: 60_000 },
      // No CRC-32 of every body by the SDK (its default since 3.729): each chunk object carries
      // its own check, verified on every read (docs/repository-format.md), and the SDK's was a
      // tenth of the event loop's time in a backup.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    };
    if (link.credentials) config.credentials = { accessKeyId: link.credentials.accessKeyId, secretAccessKey: link.credentials.secretAccessKey };
    else if (opts.credentials) config.credentials = opts.credentials;
    if (link.profile) process.env.AWS_PROFILE ??= link.profile;
    // The SDK warns on every start that releases after January 2027 need Node 22; rebound pins
    // its SDK version (package.json), so the warning says nothing about this installation.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.#client = new S3Client(config);
    this.#http = new SignedHttp({
      endpoint: link.endpoint,
      region: link.region,
      bucket: link.bucket,
      addressing: link.addressing,
      credentials: () => this.#client.config.credentials(),
    });
  }

  /** s3://bucket/prefix+key */
  url(key: string): string {
    return `s3://${this.bucket}/${this.prefix}${key}`;
  }

  /** The object's bytes, or undefined if there is none. */
  async get(key: string): Promise<Buffer | undefined> {
    return this.#retry(`GET ${this.url(key)}`, async () => {
      this.counters.get++;
      const body = await this.#http.get(this.prefix + key);
      if (body) this.counters.bytesIn += body.length;
      return body;
    });
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    return this.#retry(`HEAD ${this.url(key)}`, async () => {
      this.counters.head++;
      try {
        const r = await this.#client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
        return { key, size: r.ContentLength ?? 0, mtimeMs: r.LastModified?.getTime() ?? 0, etag: r.ETag };
      } catch (err) {
        if (status(err) === 404) return undefined;
        throw err;
      }
    });
  }

  /**
   * Writes an object. With `ifAbsent`, only if no object has the key: resolves false (and writes
   * nothing) if one has.
   */
  async put(key: string, body: Uint8Array | string, opts: { ifAbsent?: boolean } = {}): Promise<boolean> {
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    return this.#retry(`PUT ${this.url(key)}`, async () => {
      this.counters.put++;
      try {
        await this.#http.put(this.prefix + key, bytes, { ifAbsent: opts.ifAbsent, storageClass: this.#storageClass });
        this.counters.bytesOut += bytes.length;
        return true;
      } catch (err) {
        // 412: the object exists. 409 (ConditionalRequestConflict): a concurrent create won.
        if (opts.ifAbsent && (status(err) === 412 || status(err) === 409)) return false;
        throw err;
      }
    });
  }

  async delete(key: string): Promise<void> {
    await this.#retry(`DELETE ${this.url(key)}`, async () => {
      this.counters.delete++;
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
    });
  }

  /** Every object under prefix+`under` (keys returned without the repository prefix). */
  async *list(under: string): AsyncGenerator<ObjectInfo> {
    let token: string | undefined;
    do {
      const page = await this.#retry(`LIST ${this.url(under)}`, async () => {
        this.counters.list++;
        return this.#client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + under, ContinuationToken: token }));
      });
      for (const o of page.Contents ?? []) {
        if (!o.Key) continue;
        yield { key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, mtimeMs: o.LastModified?.getTime() ?? 0, etag: o.ETag };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** The underlying client (bucket creation at `repo init`). */
  get client(): S3Client {
    return this.#client;
  }

  close(): void {
    this.#http.close();
    this.#client.destroy();
  }

  async #retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#opts.retryMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!retryable(err)) {
          const st = status(err);
          throw new ReboundError('ERR_REPO_IO', `${what}: ${describe(err)}${st ? ` (HTTP ${st})` : ''}`, { cause: err });
        }
        const wait = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (attempt - 1)) * (0.75 + Math.random() * 0.5);
        if (Date.now() + wait > deadline) {
          this.#opts.onRetry?.(what, err, -attempt);
          throw new ReboundError(
            'ERR_REPO_UNREACHABLE',
            `${what}: the object store kept failing for ${Math.round(this.#opts.retryMs / 1000)} s (${attempt} attempts; last: ${describe(err)})`,
            { cause: err },
          );
        }
        this.counters.retries++;
        if (attempt === 1) this.#opts.onRetry?.(what, err, attempt);
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }
}

function status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function describe(err: unknown): string {
  const e = err as { name?: string; code?: string; message?: string };
  const text = e?.message && e.message !== 'UnknownError' ? e.message : (e?.name ?? String(err));
  return e?.code && !text.includes(e.code) ? `${e.code} ${text}` : text;
}

function retryable(err: unknown): boolean {
  const st = status(err);
  const name = (err as { name?: string }).name;
  if (err instanceof TypeError || err instanceof RangeError || name === 'CredentialsProviderError') return false;
  if (st === undefined) return true; // no HTTP answer: network error, timeout
  if (st >= 500 || st === 429 || st === 408) return true;
  return name === 'SlowDown' || name === 'RequestTimeout';
}
