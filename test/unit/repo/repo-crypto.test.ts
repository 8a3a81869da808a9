/**
 * Client-side encryption (src/repo/repo-crypto.ts): the key file and its fingerprint, subkeys, the
 * envelope format (round trip; a wrong key, a flipped byte anywhere, an object moved to another
 * name or kind never opens), encrypted chunks read on the chunk workers and inline (the worker's
 * copy of the envelope code agrees with the module's; every failure is ERR_CHUNK_CORRUPT naming
 * the chunk), the metadata sealer, and the refusals at open (ERR_REPO_KEY).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { decodeChunkFile, encodeChunkFile } from '../../../src/repo/chunk-store.js';
import { chunkPool, decodeChunkOnWorker, hashOnWorker, loadChunkOnWorker, sealOnWorker, setChunkWorkerCount } from '../../../src/repo/chunk-worker.js';
import { ZSTD } from '../../../src/repo/codec.js';
import { DiskChunkCache } from '../../../src/repo/disk-cache.js';
import {
  chunkDigest,
  deriveKeys,
  ENVELOPE_OVERHEAD,
  generateKeyFile,
  keyFingerprint,
  MetadataSealer,
  newEncryptionDescriptor,
  openKeys,
  readKeyFile,
  seal,
  unseal,
  type RepoKeys,
} from '../../../src/repo/repo-crypto.js';
import { gc } from '../../../src/repo/gc.js';
import { backup } from '../../../src/repo/ingest.js';
import { initLocalRepository, newRepoConfig, Repository, repositoryKeys } from '../../../src/repo/repository.js';
import { verify } from '../../../src/repo/verify.js';
import { WorkerPoolError } from '../../../src/util/worker-pool.js';
import { tempDir } from '../../helpers/images.js';

const dirs: string[] = [];
const dir = (): string => {
  const d = tempDir('rebound-crypto-');
  dirs.push(d);
  return d;
};
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
afterAll(() => setChunkWorkerCount(undefined));

const KEY = Buffer.alloc(32, 7);
const OTHER = Buffer.alloc(32, 8);
const SALT = '00112233445566778899aabbccddeeff';
const keys = deriveKeys(KEY, SALT);
const wrong = deriveKeys(OTHER, SALT);

function text(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let pos = 0;
  for (let n = 0; pos < size; n++) pos += b.write(`SECRET-PLAINTEXT ${seed}.${n} the quick brown fox\n`, pos);
  return b;
}

/** An encrypted chunk as an S3 repository stores it: sealed(header + compressed payload), named by the HMAC. */
async function sealedChunk(raw: Buffer, k: RepoKeys = keys): Promise<{ digest: Buffer; hex: string; stored: Buffer }> {
  const digest = chunkDigest(raw, k);
  const { header, payload } = await encodeChunkFile(raw, ZSTD, digest);
  return { digest, hex: digest.toString('hex'), stored: seal(k.encKey, 'chunk', digest, [header, payload]) };
}

describe('keys', () => {
  it('derive separate subkeys per salt; the fingerprint names the key only', () => {
    expect(keys.idKey.equals(keys.encKey)).toBe(false);
    expect(keys.idKey.equals(KEY) || keys.encKey.equals(KEY)).toBe(false);
    const again = deriveKeys(KEY, SALT);
    expect(again.idKey.equals(keys.idKey) && again.encKey.equals(keys.encKey)).toBe(true);
    const otherRepo = deriveKeys(KEY, 'ff'.repeat(16));
    expect(otherRepo.idKey.equals(keys.idKey) || otherRepo.encKey.equals(keys.encKey)).toBe(false);
    expect(otherRepo.fingerprint).toBe(keys.fingerprint);
    expect(keys.fingerprint).toMatch(/^[0-9a-f]{32}$/);
    expect(keyFingerprint(OTHER)).not.toBe(keys.fingerprint);
    // keyed chunk names: not the sha256, and differ between keys
    const raw = text(4096, 1);
    expect(chunkDigest(raw, keys).equals(crypto.createHash('sha256').update(raw).digest())).toBe(false);
    expect(chunkDigest(raw, keys).equals(chunkDigest(raw, wrong))).toBe(false);
  });

  it('keygen writes 32 bytes with mode 600 and never overwrites; readKeyFile takes raw or hex keys, refuses a key others can read', () => {
    const d = dir();
    const f = path.join(d, 'repo.key');
    const fp = generateKeyFile(f);
    expect(fs.statSync(f).size).toBe(32);
    expect(fs.statSync(f).mode & 0o777).toBe(0o600);
    expect(keyFingerprint(readKeyFile(f))).toBe(fp);
    const before = fs.readFileSync(f);
    expect(() => generateKeyFile(f)).toThrow(/already exists/);
    expect(fs.readFileSync(f).equals(before)).toBe(true);
    const hex = path.join(d, 'hex.key');
    fs.writeFileSync(hex, KEY.toString('hex') + '\n', { mode: 0o600 });
    expect(readKeyFile(hex).equals(KEY)).toBe(true);
    const bad = path.join(d, 'bad.key');
    fs.writeFileSync(bad, 'password\n', { mode: 0o600 });
    expect(() => readKeyFile(bad)).toThrow(expect.objectContaining({ code: 'ERR_REPO_KEY' }));
    const open = path.join(d, 'open.key');
    fs.writeFileSync(open, KEY, { mode: 0o644 });
    fs.chmodSync(open, 0o644);
    expect(() => readKeyFile(open)).toThrow(expect.objectContaining({ code: 'ERR_REPO_KEY', message: expect.stringMatching(/readable by group or others \(mode 0644\); chmod 600 it/) }));
    expect(() => readKeyFile(path.join(d, 'none'))).toThrow(expect.objectContaining({ code: 'ERR_REPO_KEY' }));
  });

  it('opening refuses a wrong key, a missing key, and a key for a repository that is not encrypted (ERR_REPO_KEY)', () => {
    const d = dir();
    const good = path.join(d, 'good.key');
    const bad = path.join(d, 'bad.key');
    fs.writeFileSync(good, KEY, { mode: 0o600 });
    fs.writeFileSync(bad, OTHER, { mode: 0o600 });
    const desc = newEncryptionDescriptor(KEY);
    expect(openKeys(desc, good, 's3://b/p/').fingerprint).toBe(keyFingerprint(KEY));
    expect(() => openKeys(desc, bad, 's3://b/p/')).toThrow(expect.objectContaining({ code: 'ERR_REPO_KEY', message: expect.stringMatching(/wrong key for the repository s3:\/\/b\/p\/: .*bad\.key has fingerprint [0-9a-f]{32}, the repository's key has [0-9a-f]{32}/) }));
    expect(() => openKeys(desc, undefined, 's3://b/p/')).toThrow(expect.objectContaining({ code: 'ERR_REPO_KEY', message: expect.stringMatching(/is encrypted/) }));
    const plain = newRepoConfig({});
    expect(repositoryKeys(plain, undefined, 'x')).toBeUndefined();
    expect(() => repositoryKeys(plain, good, 'x')).toThrow(expect.objectContaining({ code: 'ERR_REPO_KEY', message: expect.stringMatching(/not encrypted/) }));
    expect(repositoryKeys({ ...plain, encryption: desc }, good, 'x')!.idKey.equals(deriveKeys(KEY, desc.salt).idKey)).toBe(true);
  });
});

describe('envelopes', () => {
  it('round-trip; fresh nonce each time; the plaintext is not in the object', () => {
    const plain = text(10_000, 2);
    const a = seal(keys.encKey, 'metadata', 'vms/web/1/point.json', plain);
    const b = seal(keys.encKey, 'metadata', 'vms/web/1/point.json', plain);
    expect(a.length).toBe(plain.length + ENVELOPE_OVERHEAD);
    expect(a.equals(b)).toBe(false);
    expect(a.includes(Buffer.from('SECRET-PLAINTEXT'))).toBe(false);
    expect(unseal(keys.encKey, 'metadata', 'vms/web/1/point.json', a)!.equals(plain)).toBe(true);
    expect(unseal(keys.encKey, 'metadata', 'vms/web/1/point.json', seal(keys.encKey, 'metadata', 'k', Buffer.alloc(0)))).toBeUndefined();
    expect(unseal(keys.encKey, 'metadata', 'k', seal(keys.encKey, 'metadata', 'k', Buffer.alloc(0)))!.length).toBe(0);
  });

  it('a wrong key, any flipped byte, another name or another kind: does not open', () => {
    const plain = text(3000, 3);
    const obj = seal(keys.encKey, 'metadata', 'vms/a/1/disk0.fidx', plain);
    expect(unseal(wrong.encKey, 'metadata', 'vms/a/1/disk0.fidx', obj)).toBeUndefined();
    expect(unseal(keys.encKey, 'metadata', 'vms/b/1/disk0.fidx', obj)).toBeUndefined(); // swapped to another point
    expect(unseal(keys.encKey, 'chunk', 'vms/a/1/disk0.fidx', obj)).toBeUndefined(); // another kind
    for (let pos = 0; pos < obj.length; pos += pos < 40 ? 1 : 97) {
      const bad = Buffer.from(obj);
      bad[pos]! ^= 0x01;
      expect(unseal(keys.encKey, 'metadata', 'vms/a/1/disk0.fidx', bad), `byte ${pos}`).toBeUndefined();
    }
    expect(unseal(keys.encKey, 'metadata', 'vms/a/1/disk0.fidx', obj.subarray(0, obj.length - 1))).toBeUndefined();
  });

  it('the metadata sealer binds the key and says which object does not open', () => {
    const s = new MetadataSealer(keys);
    const sealed = Buffer.from(s.seal('vms/a/1/point.json', '{"vm":"a"}'));
    expect(s.open('vms/a/1/point.json', sealed, 'x').toString()).toBe('{"vm":"a"}');
    expect(() => s.open('vms/a/2/point.json', sealed, 's3://b/vms/a/2/point.json')).toThrow(expect.objectContaining({ code: 'ERR_REPO_CORRUPT', message: expect.stringContaining('s3://b/vms/a/2/point.json does not decrypt') }));
    const none = new MetadataSealer(undefined);
    expect(Buffer.from(none.seal('k', 'abc')).toString()).toBe('abc');
  });
});

describe.each([
  ['on 2 worker threads', 2],
  ['inline (workers: 0)', 0],
])('encrypted chunks %s', (_name, workers) => {
  const decode = async (stored: Buffer, digest: Buffer, k: RepoKeys, full = false): Promise<Uint8Array> => {
    setChunkWorkerCount(workers);
    const pool = chunkPool();
    if (!pool) return decodeChunkFile(stored, digest, k, { full });
    try {
      return (await decodeChunkOnWorker(pool, Buffer.from(stored), digest, k, full)).raw;
    } catch (err) {
      // What S3ChunkStore makes of it.
      if (err instanceof WorkerPoolError && err.code === 'CORRUPT') throw Object.assign(new Error(`chunk ${digest.toString('hex')} ${err.message}`), { code: 'ERR_CHUNK_CORRUPT' });
      throw err;
    }
  };

  it('round-trip; the stored object has no plaintext; a flipped byte, a wrong key or a swapped object is ERR_CHUNK_CORRUPT naming the chunk', async () => {
    const raw = text(256 * 1024, 4);
    const c = await sealedChunk(raw);
    expect(c.stored.includes(Buffer.from('SECRET-PLAINTEXT'))).toBe(false);
    expect(Buffer.from(await decode(c.stored, c.digest, keys)).equals(raw)).toBe(true);
    const corrupt = expect.objectContaining({ code: 'ERR_CHUNK_CORRUPT', message: expect.stringContaining(c.hex) });
    await expect(decode(c.stored, c.digest, wrong)).rejects.toThrow(corrupt);
    for (const pos of [0, 5, 10, 30, c.stored.length >> 1, c.stored.length - 1]) {
      const bad = Buffer.from(c.stored);
      bad[pos]! ^= 0x20;
      await expect(decode(bad, c.digest, keys), `byte ${pos}`).rejects.toThrow(corrupt);
    }
    const other = await sealedChunk(text(256 * 1024, 5));
    await expect(decode(other.stored, c.digest, keys)).rejects.toThrow(corrupt); // another chunk's object under this name
    // Right key, but an object not sealed: refused as well.
    const { header, payload } = await encodeChunkFile(raw, ZSTD, c.digest);
    await expect(decode(Buffer.concat([header, payload]), c.digest, keys)).rejects.toThrow(corrupt);
  });

  it('reads check the fast check inside the opened envelope; verify (full) compares the HMAC and refuses a key holder\'s forgery', async () => {
    const raw = text(128 * 1024, 7);
    const c = await sealedChunk(raw);
    expect(Buffer.from(await decode(c.stored, c.digest, keys, true)).equals(raw)).toBe(true);
    // Someone with the key seals other content, with a matching check, under this chunk's name
    // (docs/repository-format.md, "What a read proves": without the key nobody can).
    const forged = text(128 * 1024, 8);
    const { header, payload } = await encodeChunkFile(forged, ZSTD, c.digest);
    const stored = seal(keys.encKey, 'chunk', c.digest, Buffer.concat([header, payload]));
    expect(Buffer.from(await decode(stored, c.digest, keys)).equals(forged)).toBe(true);
    await expect(decode(stored, c.digest, keys, true)).rejects.toThrow(expect.objectContaining({ code: 'ERR_CHUNK_CORRUPT' }));
  });

  it('the worker and the module agree: sealed on one, opened on the other; keyed hashing', async () => {
    setChunkWorkerCount(workers);
    const pool = chunkPool();
    if (!pool) return;
    const raw = text(100_000, 6);
    const digest = chunkDigest(raw, keys);
    const { header, payload } = await encodeChunkFile(raw, ZSTD, digest);
    const plain = Buffer.concat([header, payload]);
    const onWorker = await sealOnWorker(pool, keys.encKey, 'chunk', digest, Buffer.from(plain));
    expect(unseal(keys.encKey, 'chunk', digest, onWorker)!.equals(plain)).toBe(true);
    expect(Buffer.from(await decodeChunkFile(onWorker, digest, keys)).equals(raw)).toBe(true);
    const h = await hashOnWorker(pool, Buffer.from(raw), keys.idKey);
    expect(h.digest!.equals(digest)).toBe(true);
    expect((await hashOnWorker(pool, Buffer.from(raw))).digest!.equals(crypto.createHash('sha256').update(raw).digest())).toBe(true);
    // A sealed chunk file on disk (the disk cache), read by the worker.
    const file = path.join(dir(), 'c');
    fs.writeFileSync(file, seal(keys.encKey, 'chunk', digest, plain));
    expect((await loadChunkOnWorker(pool, file, digest, keys)).equals(raw)).toBe(true);
    await expect(loadChunkOnWorker(pool, file, digest, wrong)).rejects.toThrow(expect.objectContaining({ code: 'CORRUPT' }));
  });

  it('the disk cache of an encrypted repository keeps sealed bytes and verifies them', async () => {
    setChunkWorkerCount(workers);
    const d = dir();
    const cache = await DiskChunkCache.open(d, 1 << 24, keys);
    const raw = text(64 * 1024, 7);
    const c = await sealedChunk(raw);
    await cache.store(c.hex, [c.stored]);
    expect(fs.readFileSync(cache.pathOf(c.hex)).includes(Buffer.from('SECRET-PLAINTEXT'))).toBe(false);
    expect(Buffer.from((await cache.read(c.digest))!).equals(raw)).toBe(true);
    // Opened with another key: never served, removed.
    const other = await DiskChunkCache.open(d, 1 << 24, wrong);
    expect(await other.read(c.digest)).toBeUndefined();
    expect(other.stats().rejected).toBe(1);
  });
});

describe.each([
  ['on 2 worker threads', 2],
  ['inline (workers: 0)', 0],
])('an encrypted local repository %s', (_name, workers) => {
  const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));

  it('repo init --encrypt: no plaintext under DATA/repo; reads, verify, gc, dedup work; a wrong key or none is refused', async () => {
    setChunkWorkerCount(workers);
    const d = dir();
    const data = path.join(d, 'data');
    const keyFile = path.join(d, 'repo.key');
    const otherKey = path.join(d, 'other.key');
    generateKeyFile(keyFile);
    generateKeyFile(otherKey);
    const config = initLocalRepository(data, { keyFile, chunkSize: 65536 });
    expect(config.encryption!.fingerprint).toBe(keyFingerprint(readKeyFile(keyFile)));
    expect(() => initLocalRepository(data, { keyFile })).toThrow(/holds a repository already/);

    const img = path.join(d, 'disk.img');
    const content = Buffer.concat([text(300_000, 8), crypto.randomBytes(200_000), text(100_000, 8)]);
    fs.writeFileSync(img, content);
    const vmx = path.join(d, 'vm.vmx');
    fs.writeFileSync(vmx, 'displayName = "SECRET-PLAINTEXT-CONFIG"\n');
    let repo = await Repository.open(data, {}); // the key file init recorded
    try {
      const m = await backup(repo, { vm: 'web', disks: [{ name: 'disk0', source: img }], configs: [vmx] });
      for (const f of walk(path.join(data, 'repo'))) {
        const body = fs.readFileSync(f);
        for (const needle of ['SECRET-PLAINTEXT', img, 'vm.vmx']) expect(body.includes(Buffer.from(needle)), `${f} contains ${needle}`).toBe(false);
      }
      const image = await repo.openImage(m, 'disk0');
      const back = Buffer.alloc(content.length);
      await image.read(back, 0);
      await image.close();
      expect(back.equals(content)).toBe(true);
      expect((await repo.readConfigFile(m, 'vm.vmx')).toString()).toContain('SECRET-PLAINTEXT-CONFIG');
      expect(repo.describe().encryption).toMatchObject({ fingerprint: config.encryption!.fingerprint });
      const again = await backup(repo, { vm: 'web', disks: [{ name: 'disk0', source: img }] });
      expect(again.disks[0]!.newChunks).toBe(0);
      expect(await verify(repo)).toMatchObject({ ok: true, points: 2 });
      await repo.deletePoint('web', m.id);
      // gc also reads manifests from the point directories (a point the catalog does not know yet).
      await repo.catalog.delete('web', again.id);
      expect((await gc(repo)).removedChunks).toBe(0); // the second point holds every chunk
      expect(await repo.reindex()).toBe(1);
      expect(await verify(repo)).toMatchObject({ ok: true, points: 1 });
    } finally {
      await repo.close();
    }
    await expect(Repository.open(data, { keyFile: otherKey })).rejects.toThrow(expect.objectContaining({ code: 'ERR_REPO_KEY', message: expect.stringMatching(/wrong key for the repository/) }));
    const cfg = JSON.parse(fs.readFileSync(path.join(data, 'repo', 'repo.json'), 'utf8'));
    fs.writeFileSync(path.join(data, 'repo', 'repo.json'), JSON.stringify({ ...cfg, keyFile: undefined }));
    await expect(Repository.open(data, {})).rejects.toThrow(expect.objectContaining({ code: 'ERR_REPO_KEY', message: expect.stringMatching(/is encrypted/) }));
    repo = await Repository.open(data, { keyFile });
    await repo.close();
  });

  it('a new local repository is created encrypted when a key file is set; a key for a plain one is refused', async () => {
    setChunkWorkerCount(workers);
    const d = dir();
    const keyFile = path.join(d, 'repo.key');
    generateKeyFile(keyFile);
    const repo = await Repository.open(path.join(d, 'enc'), { keyFile });
    await repo.close();
    expect(JSON.parse(fs.readFileSync(path.join(d, 'enc', 'repo', 'repo.json'), 'utf8')).encryption.fingerprint).toBe(keyFingerprint(readKeyFile(keyFile)));
    const plain = await Repository.open(path.join(d, 'plain'), {});
    await plain.close();
    await expect(Repository.open(path.join(d, 'plain'), { keyFile })).rejects.toThrow(expect.objectContaining({ code: 'ERR_REPO_KEY', message: expect.stringMatching(/is not encrypted/) }));
  });
});
