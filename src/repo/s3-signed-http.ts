/**
 * SignedHttp: the S3 repository's hot requests, GET and PUT of one object, without the AWS SDK's
 * per-request machinery: SigV4-signed requests (@smithy/signature-v4, the SDK's own signer) on
 * Node's http(s) client with a keep-alive agent. The other requests (HEAD, LIST, DELETE, bucket
 * creation) stay on the SDK (s3-objects.ts).
 *
 * Why: a backup writes and a restore or a cold boot reads one object per chunk, hundreds a second,
 * and the SDK's command stack (middleware, endpoint rules, a fresh signing context, response
 * parsing; for a PUT over http also a sha256 of the body to sign it) cost about 3 ms of event-loop
 * time per request against Ceph RGW: the loop was saturated and restores ran below restic's
 * (tools/bench/s3.mjs). Here a request costs the signing (HMACs of a few hundred bytes; the
 * signing key is cached per day) and one HTTP exchange.
 *
 * Design notes:
 *  - The answer is what the SDK's would be, so S3Objects' retry policy applies unchanged: GET gives
 *    the body for 200 and undefined for 404; any other status is an error carrying the SDK's shape
 *    ($metadata.httpStatusCode, and name = the S3 error code from the XML body, e.g. SlowDown).
 *    Network errors and timeouts are thrown as they come (no status: retryable).
 *  - A PUT's body is not part of the signature (x-amz-content-sha256: UNSIGNED-PAYLOAD, which S3
 *    and RGW accept with header signing): every chunk object carries its own check (CRC-32 or, when
 *    encrypted, the GCM tag), verified on every read, so a body damaged in transit is caught there,
 *    and hashing each MiB to sign it cost the event loop more than the request.
 *  - Credentials come from the SDK client's resolved provider (the link's keys, AWS_* variables,
 *    a profile) and are asked for on every request: the provider caches them and refreshes
 *    expiring ones.
 *  - The key is sent percent-encoded per segment (RFC 3986 unreserved characters kept, '/' kept),
 *    the form S3 signs; the signer is told not to encode it again (uriEscapePath false, as S3
 *    requires).
 *  - Timeouts: 15 s without a byte (connecting included), 60 s for the whole request; a timeout is
 *    a network error (retried). A body longer than MAX_OBJECT_BYTES is refused (no object rebound
 *    writes is that large): a hostile endpoint cannot make the daemon buffer without bound.
 */
import http from 'node:http';
import https from 'node:https';
import { Sha256 } from '@smithy/core/checksum';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';

/** No byte from the endpoint for this long (connecting included) counts as a failure (retried). */
const IDLE_TIMEOUT_MS = 15_000;
const REQUEST_TIMEOUT_MS = 60_000;
/** Far above any chunk or pack object rebound writes. */
const MAX_OBJECT_BYTES = 256 * 1024 * 1024;
/** SHA-256 of the empty payload (a GET has none). */
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export interface SignedHttpTarget {
  /** http(s)://host[:port] */
  endpoint: string;
  region: string;
  bucket: string;
  addressing: 'path' | 'virtual';
  credentials: AwsCredentialIdentityProvider;
}

/** An S3 error answer, shaped like the SDK's exceptions for S3Objects' retry policy. */
export class S3HttpError extends Error {
  readonly $metadata: { httpStatusCode: number };

  constructor(status: number, code: string | undefined, message: string) {
    super(message);
    this.name = code ?? `HTTP${status}`;
    this.$metadata = { httpStatusCode: status };
  }
}

export interface PutOptions {
  /** Only if no object has the key (If-None-Match: *): a 412 answer is then an S3HttpError with status 412. */
  ifAbsent?: boolean;
  storageClass?: string;
}

interface Answer {
  status: number;
  body: Buffer;
}

export class SignedHttp {
  readonly #url: URL;
  readonly #virtual: boolean;
  readonly #bucket: string;
  readonly #signer: SignatureV4;
  readonly #agent: http.Agent;
  readonly #request: typeof http.request;

  constructor(target: SignedHttpTarget) {
    this.#url = new URL(target.endpoint);
    this.#virtual = target.addressing === 'virtual';
    this.#bucket = target.bucket;
    const credentials = target.credentials;
    this.#signer = new SignatureV4({
      service: 's3',
      region: target.region,
      credentials: (): Promise<AwsCredentialIdentity> => credentials(),
      sha256: Sha256,
      uriEscapePath: false,
      applyChecksum: false,
    });
    const secure = this.#url.protocol === 'https:';
    this.#request = secure ? https.request : http.request;
    this.#agent = secure ? new https.Agent({ keepAlive: true, maxSockets: 64 }) : new http.Agent({ keepAlive: true, maxSockets: 64 });
  }

  /** The object's bytes, or undefined when the bucket has no such key. */
  async get(key: string): Promise<Buffer | undefined> {
    const { status, body } = await this.#exchange('GET', key, { 'x-amz-content-sha256': EMPTY_SHA256 });
    if (status === 200) return body;
    if (status === 404) return undefined;
    throw answerError(status, body);
  }

  /** Writes the object (S3 PUTs are atomic: readers see the old object or the whole new one). */
  async put(key: string, body: Uint8Array, opts: PutOptions = {}): Promise<void> {
    const headers: Record<string, string> = {
      'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
      'content-length': String(body.length),
      'content-type': 'application/octet-stream',
    };
    if (opts.ifAbsent) headers['if-none-match'] = '*';
    if (opts.storageClass) headers['x-amz-storage-class'] = opts.storageClass;
    const answer = await this.#exchange('PUT', key, headers, body);
    if (answer.status !== 200) throw answerError(answer.status, answer.body);
  }

  close(): void {
    this.#agent.destroy();
  }

  async #exchange(method: 'GET' | 'PUT', key: string, headers: Record<string, string>, payload?: Uint8Array): Promise<Answer> {
    const hostname = this.#virtual ? `${this.#bucket}.${this.#url.hostname}` : this.#url.hostname;
    const port = this.#url.port;
    const encodedKey = key.split('/').map(encodeSegment).join('/');
    const signed = await this.#signer.sign({
      method,
      protocol: this.#url.protocol,
      hostname,
      port: port ? Number(port) : undefined,
      path: this.#virtual ? `/${encodedKey}` : `/${this.#bucket}/${encodedKey}`,
      query: {},
      headers: { ...headers, host: port ? `${hostname}:${port}` : hostname },
    });
    const what = `${method} ${key}`;
    return new Promise<Answer>((resolve, reject) => {
      const req = this.#request(
        {
          agent: this.#agent,
          method,
          // Connect to the endpoint's host even for virtual-host addressing (the Host header names the bucket).
          hostname: this.#url.hostname,
          port: port || undefined,
          path: signed.path,
          headers: signed.headers,
          timeout: IDLE_TIMEOUT_MS,
        },
        (res) => {
          const status = res.statusCode ?? 0;
          const length = Number(res.headers['content-length']);
          if (Number.isSafeInteger(length) && length > MAX_OBJECT_BYTES) {
            res.destroy();
            return reject(new Error(`${what}: the endpoint announced ${length} bytes, more than any object rebound writes`));
          }
          const parts: Buffer[] = [];
          let received = 0;
          res.on('data', (b: Buffer) => {
            received += b.length;
            if (received > MAX_OBJECT_BYTES) res.destroy(new Error(`${what}: the answer exceeds ${MAX_OBJECT_BYTES} bytes`));
            else parts.push(b);
          });
          res.on('error', reject);
          // A connection that closed mid-body ends without 'end' (and not always with 'error').
          res.on('close', () => {
            if (!res.complete) reject(Object.assign(new Error(`${what}: the connection closed after ${received} bytes of the answer`), { code: 'ECONNRESET' }));
          });
          res.on('end', () => {
            if (Number.isSafeInteger(length) && length !== received) {
              return reject(new Error(`${what}: the answer ended after ${received} of ${length} bytes`));
            }
            resolve({ status, body: parts.length === 1 ? parts[0]! : Buffer.concat(parts, received) });
          });
        },
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error(`${what}: the endpoint sent nothing for ${IDLE_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })));
      const whole = setTimeout(
        () => req.destroy(Object.assign(new Error(`${what}: not done within ${REQUEST_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })),
        REQUEST_TIMEOUT_MS,
      );
      req.on('close', () => clearTimeout(whole));
      req.on('error', reject);
      req.end(payload);
    });
  }
}

/** The S3 error of a non-success answer: its code and message from the XML body. */
function answerError(status: number, body: Buffer): S3HttpError {
  const text = body.toString('utf8', 0, Math.min(body.length, 4096));
  const code = /<Code>([^<]{1,64})<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]{0,512})<\/Message>/.exec(text)?.[1];
  return new S3HttpError(status, code, message || code || `HTTP ${status}`);
}

/** RFC 3986 percent-encoding of one path segment (S3's canonical form: unreserved characters kept). */
function encodeSegment(segment: string): string {
  return encodeURIComponent(segment).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}
