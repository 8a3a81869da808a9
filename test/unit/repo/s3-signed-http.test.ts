/**
 * repo/s3-signed-http.ts SignedHttp and S3Objects.get/put on it: what goes on the wire (SigV4-signed
 * GETs and PUTs of the percent-encoded key, path- or virtual-host-style; a PUT's body, length,
 * If-None-Match and storage class) and how each answer maps (200 body, 404 undefined, an S3 error
 * code with its status, a short or oversized body an error), and that S3Objects' retry policy and
 * conditional create still work (503 SlowDown is retried; 412 means the object exists). The endpoint here is a small
 * HTTP server in the test: it checks rebound's side of the exchange; that real endpoints accept the
 * signature is test/interop/s3-repo.test.ts's job (Ceph RGW).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { S3HttpError, SignedHttp } from '../../../src/repo/s3-signed-http.js';
import { S3Objects } from '../../../src/repo/s3-objects.js';
import { makeLink } from '../../../src/repo/s3-link.js';

interface Seen {
  method?: string;
  url?: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** What the endpoint answers next (a queue; the last one repeats). */
let answers: Array<(res: http.ServerResponse) => void> = [];
let seen: Seen[] = [];
let server: http.Server;
let endpoint: string;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (b: Buffer) => parts.push(b));
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(parts) });
      const answer = answers.length > 1 ? answers.shift()! : answers[0]!;
      answer(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const credentials = () => Promise.resolve({ accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' });
const ok = (body: Buffer) => (res: http.ServerResponse) => res.writeHead(200, { 'content-length': body.length }).end(body);
const s3Error = (status: number, code: string) => (res: http.ServerResponse) =>
  res.writeHead(status, { 'content-type': 'application/xml' }).end(`<?xml version="1.0"?><Error><Code>${code}</Code><Message>try ${code}</Message></Error>`);

function getter(addressing: 'path' | 'virtual' = 'path'): SignedHttp {
  seen = [];
  return new SignedHttp({ endpoint, region: 'eu-test-1', bucket: 'bkt', addressing, credentials });
}

it('sends a signed GET of the percent-encoded key and returns the body', async () => {
  const body = Buffer.from('chunk bytes');
  answers = [ok(body)];
  const g = getter();
  try {
    expect(await g.get("pre fix/chunks/ab/it's(1)*")).toEqual(body);
  } finally {
    g.close();
  }
  const r = seen[0]!;
  expect(r.method).toBe('GET');
  expect(r.url).toBe('/bkt/pre%20fix/chunks/ab/it%27s%281%29%2A');
  expect(r.headers.host).toBe(endpoint.slice('http://'.length));
  expect(r.headers['x-amz-content-sha256']).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  expect(r.headers['x-amz-date']).toMatch(/^\d{8}T\d{6}Z$/);
  expect(r.headers.authorization).toMatch(
    /^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/eu-test-1\/s3\/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=[0-9a-f]{64}$/,
  );
});

it('names the bucket in the Host header with virtual-host addressing', async () => {
  answers = [ok(Buffer.from('x'))];
  const g = getter('virtual');
  try {
    await g.get('chunks/k');
  } finally {
    g.close();
  }
  expect(seen[0]!.url).toBe('/chunks/k');
  expect(seen[0]!.headers.host).toBe(`bkt.${endpoint.slice('http://'.length)}`);
});

it('maps a missing object to undefined and an S3 error to its code and status', async () => {
  const g = getter();
  try {
    answers = [s3Error(404, 'NoSuchKey')];
    expect(await g.get('chunks/none')).toBeUndefined();
    answers = [s3Error(403, 'AccessDenied')];
    const err = await g.get('chunks/k').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(S3HttpError);
    expect(err).toMatchObject({ name: 'AccessDenied', message: 'try AccessDenied', $metadata: { httpStatusCode: 403 } });
  } finally {
    g.close();
  }
});

it('refuses a body shorter than announced and one larger than any object', async () => {
  const g = getter();
  try {
    answers = [
      (res) => {
        res.writeHead(200, { 'content-length': 100 });
        res.write(Buffer.alloc(10));
        setTimeout(() => res.socket?.destroy(), 20);
      },
    ];
    await expect(g.get('chunks/short')).rejects.toThrow();
    answers = [(res) => res.writeHead(200, { 'content-length': 1024 * 1024 * 1024 }).end()];
    await expect(g.get('chunks/huge')).rejects.toThrow(/more than any object/);
  } finally {
    g.close();
  }
});

it('sends a PUT with its body unsigned (UNSIGNED-PAYLOAD), its length, If-None-Match and storage class', async () => {
  answers = [(res) => res.writeHead(200, { 'content-length': 0 }).end()];
  const g = getter();
  const body = Buffer.from('sealed chunk object');
  try {
    await g.put('chunks/ab/k', body, { ifAbsent: true, storageClass: 'STANDARD_IA' });
  } finally {
    g.close();
  }
  const r = seen[0]!;
  expect(r).toMatchObject({ method: 'PUT', url: '/bkt/chunks/ab/k' });
  expect(r.body).toEqual(body);
  expect(r.headers).toMatchObject({
    'content-length': String(body.length),
    'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
    'if-none-match': '*',
    'x-amz-storage-class': 'STANDARD_IA',
  });
  expect(r.headers.authorization).toMatch(/SignedHeaders=[^,]*if-none-match[^,]*x-amz-content-sha256/);
});

it('S3Objects.put: a conditional create answered 412 is false (the object exists); a 500 is retried', async () => {
  const link = makeLink({ url: endpoint, bucket: 'bkt', accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' });
  const objects = new S3Objects(link, { retryMs: 10_000 });
  try {
    answers = [s3Error(412, 'PreconditionFailed')];
    expect(await objects.put('chunks/k', Buffer.from('x'), { ifAbsent: true })).toBe(false);
    answers = [s3Error(500, 'InternalError'), (res) => res.writeHead(200, { 'content-length': 0 }).end()];
    seen = [];
    expect(await objects.put('chunks/k', Buffer.from('xy'))).toBe(true);
    expect(seen.map((r) => r.body.toString())).toEqual(['xy', 'xy']);
    answers = [s3Error(403, 'AccessDenied')];
    await expect(objects.put('chunks/k', Buffer.from('x'))).rejects.toMatchObject({ code: 'ERR_REPO_IO', message: expect.stringContaining('HTTP 403') });
  } finally {
    objects.close();
  }
});

it('S3Objects.get retries a 503 SlowDown and returns the object', async () => {
  const body = Buffer.from('after the throttle');
  answers = [s3Error(503, 'SlowDown'), ok(body)];
  seen = [];
  const link = makeLink({ url: endpoint, bucket: 'bkt', prefix: 'p', accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' });
  const objects = new S3Objects(link, { retryMs: 10_000 });
  try {
    expect(await objects.get('chunks/k')).toEqual(body);
  } finally {
    objects.close();
  }
  expect(seen.map((s) => s.url)).toEqual(['/bkt/p/chunks/k', '/bkt/p/chunks/k']);
  expect(objects.counters).toMatchObject({ get: 2, retries: 1, bytesIn: body.length });
});
