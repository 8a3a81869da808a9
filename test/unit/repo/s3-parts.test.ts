/**
 * The S3 repository's local pieces without an endpoint: the disk chunk cache (bounded LRU, kept
 * across reopen in use order, a damaged cached file rejected and removed), the S3 link's checks
 * (archive storage classes, bucket names, endpoints) and the access map format.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeChunkFile } from '../../../src/repo/chunk-store.js';
import { ZSTD } from '../../../src/repo/codec.js';
import { DiskChunkCache } from '../../../src/repo/disk-cache.js';
import { makeLink } from '../../../src/repo/s3-link.js';
import { decodeAccessMap, encodeAccessMap } from '../../../src/repo/access-map.js';
import { tempDir } from '../../helpers/images.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

async function chunk(seed: number): Promise<{ digest: Buffer; hex: string; raw: Buffer; stored: Buffer }> {
  const raw = crypto.createHash('sha512').update(String(seed)).digest();
  const big = Buffer.concat(Array.from({ length: 256 }, (_, i) => Buffer.concat([raw, Buffer.from([i])])));
  const digest = crypto.createHash('sha256').update(big).digest();
  const { header, payload } = await encodeChunkFile(big, ZSTD, digest);
  return { digest, hex: digest.toString('hex'), raw: big, stored: Buffer.concat([header, payload]) };
}

describe('DiskChunkCache', () => {
  it('returns verified chunks, evicts the least recently used past its size, and keeps the use order across reopen', async () => {
    const dir = tempDir('rebound-dcache-');
    dirs.push(dir);
    const cs = await Promise.all([1, 2, 3, 4].map(chunk));
    const each = cs[0]!.stored.length;
    let cache = await DiskChunkCache.open(dir, Math.floor(each * 3.5));
    for (const c of cs.slice(0, 3)) await cache.store(c.hex, [c.stored]);
    expect(Buffer.from((await cache.read(cs[0]!.digest))!).equals(cs[0]!.raw)).toBe(true); // 0 is now the newest
    await new Promise((r) => setTimeout(r, 20));
    await cache.store(cs[3]!.hex, [cs[3]!.stored]); // evicts 1, the least recently used
    expect(cache.has(cs[1]!.hex)).toBe(false);
    expect(cache.stats()).toMatchObject({ chunks: 3, hits: 1, misses: 0 });
    expect(await cache.read(cs[1]!.digest)).toBeUndefined();

    cache = await DiskChunkCache.open(dir, Math.floor(each * 2.5)); // smaller now: the oldest use goes
    expect(cache.stats().chunks).toBe(2);
    expect(cache.has(cs[2]!.hex)).toBe(false);
    expect(cache.has(cs[0]!.hex) && cache.has(cs[3]!.hex)).toBe(true);
  });

  it('never serves a damaged cached file: it is a miss and the file is gone', async () => {
    const dir = tempDir('rebound-dcache-');
    dirs.push(dir);
    const c = await chunk(9);
    const cache = await DiskChunkCache.open(dir, 1 << 20);
    await cache.store(c.hex, [c.stored]);
    const file = cache.pathOf(c.hex);
    const bad = fs.readFileSync(file);
    bad[bad.length - 3]! ^= 1;
    fs.writeFileSync(file, bad);
    expect(await cache.read(c.digest)).toBeUndefined();
    expect(fs.existsSync(file)).toBe(false);
    expect(cache.stats()).toMatchObject({ chunks: 0, rejected: 1 });
  });
});

describe('S3 link checks', () => {
  const base = { url: 'http://127.0.0.1:7480', bucket: 'backups' };
  it('refuses archive storage classes, bad bucket names and endpoints with a path', () => {
    expect(() => makeLink({ ...base, storageClass: 'glacier' })).toThrow(/GLACIER is an archive class/);
    expect(() => makeLink({ ...base, storageClass: 'DEEP_ARCHIVE' })).toThrow(/archive class/);
    expect(() => makeLink({ ...base, bucket: 'ab' })).toThrow(/bucket name 'ab' is not valid/);
    expect(() => makeLink({ ...base, url: 'http://h:1/bucket' })).toThrow(/must not have a path/);
    expect(() => makeLink({ ...base, url: 'ftp://h' })).toThrow(/http:\/\/ or https:\/\//);
    expect(() => makeLink({ ...base, accessKeyId: 'x' })).toThrow(/both --access-key-id and --secret-access-key/);
  });
  it('normalizes the prefix and keeps addressing and the storage class', () => {
    const l = makeLink({ ...base, prefix: '/site1', virtualHost: true, storageClass: 'standard_ia' });
    expect(l).toMatchObject({ prefix: 'site1/', addressing: 'virtual', storageClass: 'STANDARD_IA', endpoint: 'http://127.0.0.1:7480' });
    expect(l.gateway).toMatch(/^[A-Za-z0-9.-]+-[0-9a-f]{8}$/);
  });
});

describe('access maps', () => {
  it('round-trip, and a map that does not fit the disk is ignored', () => {
    const m = encodeAccessMap([5, 0, 17, 3]);
    expect(m.subarray(0, 8).toString()).toBe('RBAMAP01');
    expect(decodeAccessMap(m, 18)).toEqual([5, 0, 17, 3]);
    expect(decodeAccessMap(m, 17)).toBeUndefined();
    expect(decodeAccessMap(m.subarray(0, m.length - 1), 18)).toBeUndefined();
    expect(decodeAccessMap(Buffer.from('nonsense-nonsense'), 18)).toBeUndefined();
  });
});
