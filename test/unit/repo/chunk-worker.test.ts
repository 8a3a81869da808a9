/**
 * The chunk workers (src/repo/chunk-worker.ts) and the inline path (`workers: 0`) must both answer
 * a stored chunk only when it is verified: every bit flipped in a stored chunk file is an error
 * (ERR_CHUNK_CORRUPT), never wrong data (a flip in deflate's final padding bits changes nothing
 * the decoder reads: the chunk still verifies and is the right data).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ChunkStore, decodeChunkFile, encodeChunkFile } from '../../../src/repo/chunk-store.js';
import { chunkPool, decodeChunkOnWorker, decodeChunkToFileOnWorker, encodeOnWorker, hashOnWorker, setChunkWorkerCount } from '../../../src/repo/chunk-worker.js';
import { DEFLATE, NONE, ZSTD, type Codec } from '../../../src/repo/codec.js';
import { WorkerPool } from '../../../src/util/worker-pool.js';
import { tempDir } from '../../helpers/images.js';

const dirs: string[] = [];
const dir = (): string => {
  const d = tempDir();
  dirs.push(d);
  return d;
};
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
afterAll(() => setChunkWorkerCount(undefined));
const sha = (b: Uint8Array): Buffer => crypto.createHash('sha256').update(b).digest();

/** Text-like data (compresses) or random data (stored uncompressed whatever the codec). */
function content(kind: 'text' | 'random', size: number, seed: number): Buffer {
  if (kind === 'random') return crypto.randomBytes(size);
  const b = Buffer.alloc(size);
  let pos = 0;
  for (let n = 0; pos < size; n++) pos += b.write(`line ${seed}.${n}: the quick brown fox ${n * 7919}\n`, pos);
  return b;
}

describe.each([
  ['on 2 worker threads', 2, true],
  ['on 2 worker threads without the native zstd decoder', 2, false],
  ['inline (workers: 0)', 0, true],
])('chunk reads %s', (_name, workers, nativeZstd) => {
  const setChunkWorkers = (n: number): void => setChunkWorkerCount(n, { nativeZstd });
  it.each([
    ['zstd', ZSTD, 'text'],
    ['deflate', DEFLATE, 'text'],
    ['none', NONE, 'text'],
    ['zstd, incompressible (stored raw)', ZSTD, 'random'],
  ] as Array<[string, Codec, 'text' | 'random']>)('%s: every flipped bit tried is an error, never data', async (_c, codec, kind) => {
    setChunkWorkers(workers);
    const store = new ChunkStore(path.join(dir(), 'chunks'), codec);
    const data = content(kind, 256 * 1024, 1);
    const digest = sha(data);
    await store.put(digest, data);
    const file = store.pathOf(digest.toString('hex'));
    const good = fs.readFileSync(file);
    expect(Buffer.from(await store.readChunk(digest)).equals(data)).toBe(true);
    const shared = new Uint8Array(new SharedArrayBuffer(data.length));
    await store.readChunkInto(digest, shared);
    expect(Buffer.from(shared).equals(data)).toBe(true);
    const sinkPath = path.join(dir(), 'restored');
    const sinkFd = fs.openSync(sinkPath, 'w+');
    const sink = { fd: sinkFd, path: sinkPath };
    await store.copyChunkTo(digest, sink, 4096);
    expect(fs.readFileSync(sinkPath).subarray(4096).equals(data)).toBe(true);
    // Header bytes that matter (magic, version, codec, length) and 48 payload positions spread over the file.
    // Flags and the fast check (6-7, 12-15) too; see below for the flag bit of the check itself.
    const positions = [0, 3, 4, 5, 6, 7, 8, 11, 12, 15, ...Array.from({ length: 48 }, (_, k) => 16 + Math.floor(((good.length - 17) * k) / 47))];
    let sameData = 0;
    for (const pos of positions) {
      for (const bit of [0, 7]) {
        const bad = Buffer.from(good);
        bad[pos]! ^= 1 << bit;
        fs.writeFileSync(file, bad);
        const got = await store.readChunk(digest).catch((err: unknown) => err);
        // The same chunk into shared memory (a migration's buffer) and into a file (a restore).
        shared.fill(0);
        const into = await store.readChunkInto(digest, shared).catch((err: unknown) => err);
        fs.writeFileSync(sink.path, Buffer.alloc(0));
        const copied = await store.copyChunkTo(digest, sink, 4096).catch((err: unknown) => err);
        if (got instanceof Uint8Array) {
          // Deflate's last byte has padding bits no decoder reads; and clearing the flag of the
          // fast check (bit 0 of byte 7) leaves the full digest to verify: the same data, never other data.
          if (!(pos === 7 && bit === 0)) expect(codec, `bit ${bit} of byte ${pos}`).toBe(DEFLATE);
          expect(Buffer.from(got).equals(data)).toBe(true);
          expect(into).toBeUndefined();
          expect(copied).toBeUndefined();
          sameData++;
        } else {
          expect(got, `bit ${bit} of byte ${pos}`).toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
          expect(into, `bit ${bit} of byte ${pos}, readChunkInto`).toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
          expect(copied, `bit ${bit} of byte ${pos}, copyChunkTo`).toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
          // Nothing unverified reached the file (a worker writes only after the check).
          expect(fs.statSync(sink.path).size, `bit ${bit} of byte ${pos}: bytes written`).toBe(0);
        }
      }
    }
    expect(sameData).toBeLessThanOrEqual(2);
    fs.writeFileSync(file, good.subarray(0, good.length - 1));
    await expect(store.readChunk(digest)).rejects.toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
    fs.writeFileSync(file, good.subarray(0, 10));
    await expect(store.readChunk(digest)).rejects.toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
    fs.rmSync(file);
    await expect(store.readChunk(digest)).rejects.toMatchObject({ code: 'ERR_CHUNK_MISSING' });
    fs.writeFileSync(file, good);
    expect(Buffer.from(await store.readChunk(digest)).equals(data)).toBe(true);
    // Shared memory of the wrong size is refused, not overrun.
    await expect(store.readChunkInto(digest, new Uint8Array(new SharedArrayBuffer(data.length - 1)))).rejects.toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
    fs.closeSync(sinkFd);
  });

  it('a write to a sink that fails is the target’s error, not the chunk’s', async () => {
    setChunkWorkers(workers);
    const store = new ChunkStore(path.join(dir(), 'chunks'), ZSTD);
    const data = content('text', 64 * 1024, 5);
    await store.put(sha(data), data);
    const p = path.join(dir(), 'ro');
    fs.writeFileSync(p, '');
    const fd = fs.openSync(p, 'r'); // not open for writing: EBADF
    try {
      await expect(store.copyChunkTo(sha(data), { fd, path: p }, 0)).rejects.toMatchObject({ name: 'BlockError', code: 'EIO', message: expect.stringContaining(p) });
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a chunk stored under another chunk’s name is corrupt', async () => {
    setChunkWorkers(workers);
    const store = new ChunkStore(path.join(dir(), 'chunks'), ZSTD);
    const a = content('text', 100_000, 2);
    const b = content('text', 100_000, 3);
    await store.put(sha(a), a);
    await store.put(sha(b), b);
    fs.copyFileSync(store.pathOf(sha(b).toString('hex')), store.pathOf(sha(a).toString('hex')));
    await expect(store.readChunk(sha(a))).rejects.toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
  });

  it('a chunk written before the fast check existed (flags 0) is verified by its sha256', async () => {
    setChunkWorkers(workers);
    const store = new ChunkStore(path.join(dir(), 'chunks'), ZSTD);
    const data = content('text', 200_000, 6);
    await store.put(sha(data), data);
    const file = store.pathOf(sha(data).toString('hex'));
    const old = fs.readFileSync(file);
    old.writeUInt16BE(0, 6);
    old.writeUInt32BE(0, 12);
    fs.writeFileSync(file, old);
    expect(Buffer.from(await store.readChunk(sha(data))).equals(data)).toBe(true);
    old[old.length - 9]! ^= 0x04;
    fs.writeFileSync(file, old);
    await expect(store.readChunk(sha(data))).rejects.toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
  });

  it('what the fast check does not prove: a forged file (bytes and check rewritten together) passes it; verify’s full digest refuses it', async () => {
    setChunkWorkers(workers);
    const store = new ChunkStore(path.join(dir(), 'chunks'), NONE);
    const data = content('text', 64 * 1024, 7);
    const forged = content('text', 64 * 1024, 8);
    const digest = sha(data);
    await store.put(digest, data);
    const file = store.pathOf(digest.toString('hex'));
    const { header, payload } = await encodeChunkFile(forged, NONE, digest);
    fs.writeFileSync(file, Buffer.concat([header, payload]));
    // Only someone who can write the repository can do this, and they can rewrite its indexes as
    // well (docs/repository-format.md, "What a read proves").
    expect(Buffer.from(await store.readChunk(digest)).equals(forged)).toBe(true);
    await expect(store.readChunk(digest, { full: true })).rejects.toMatchObject({ code: 'ERR_CHUNK_CORRUPT' });
  });

  it('many concurrent reads each get their own chunk', async () => {
    setChunkWorkers(workers);
    const store = new ChunkStore(path.join(dir(), 'chunks'), ZSTD);
    const chunks = Array.from({ length: 40 }, (_, i) => content(i % 3 === 0 ? 'random' : 'text', 64 * 1024 + i, i));
    for (const c of chunks) await store.put(sha(c), c);
    const got = await Promise.all(chunks.map((c) => store.readChunk(sha(c))));
    got.forEach((g, i) => expect(Buffer.from(g).equals(chunks[i]!), `chunk ${i}`).toBe(true));
  });
});

describe('chunk worker pool', () => {
  it('hashes shared memory in place and other memory from a copy; zero chunks have no digest', async () => {
    setChunkWorkerCount(2);
    const pool = chunkPool()!;
    const data = content('text', 1024 * 1024, 4);
    const shared = Buffer.from(new SharedArrayBuffer(data.length));
    data.copy(shared);
    const r = await hashOnWorker(pool, shared);
    expect(r.zero).toBe(false);
    expect(r.digest!.equals(sha(data))).toBe(true);
    expect(shared.equals(data)).toBe(true); // still the caller's, unchanged
    const z = await hashOnWorker(pool, Buffer.alloc(3 * 1024 * 1024 + 512));
    expect(z).toEqual({ zero: true, digest: undefined });
    // A view into a larger plain buffer: copied, its neighbours untouched and usable.
    const big = Buffer.alloc(8192, 1);
    const view = big.subarray(4096);
    const v = await hashOnWorker(pool, view);
    expect(v.digest!.equals(sha(Buffer.alloc(4096, 1)))).toBe(true);
    expect(view.length).toBe(4096);
    expect(big[0]).toBe(1);
  });

  it('stores a backup’s chunk from shared memory on a worker: the same file as the event loop writes, once; the memory stays in place', async () => {
    setChunkWorkerCount(2);
    const pool = chunkPool()!;
    for (const [codec, data] of [[ZSTD, content('text', 300_000, 20)], [DEFLATE, content('text', 70_000, 21)], [ZSTD, content('random', 50_000, 22)], [NONE, content('text', 9_000, 23)]] as Array<[Codec, Buffer]>) {
      const shared = Buffer.from(new SharedArrayBuffer(data.length));
      data.copy(shared);
      const h = await hashOnWorker(pool, shared);
      expect(h.digest!.equals(sha(data))).toBe(true);
      const onWorker = new ChunkStore(path.join(dir(), 'chunks'), codec);
      const onLoop = new ChunkStore(path.join(dir(), 'chunks'), codec);
      const put = await onWorker.put(h.digest!, shared);
      expect(await onLoop.put(h.digest!, data)).toEqual(put);
      const hex = h.digest!.toString('hex');
      expect(fs.readFileSync(onWorker.pathOf(hex)).equals(fs.readFileSync(onLoop.pathOf(hex))), codec.name).toBe(true);
      expect(put).toEqual({ stored: true, bytes: fs.statSync(onWorker.pathOf(hex)).size });
      expect(await onWorker.put(h.digest!, shared)).toEqual({ stored: false, bytes: 0 });
      expect(Buffer.from(await onWorker.readChunk(h.digest!)).equals(data)).toBe(true);
      expect(fs.readdirSync(onWorker.tmpDir)).toEqual([]);
    }
    // A chunk directory that cannot be made (a file in its place) is the repository's I/O error; no temp file stays.
    const store = new ChunkStore(path.join(dir(), 'chunks'), ZSTD);
    const data = Buffer.from(new SharedArrayBuffer(4096)).fill(9);
    const digest = sha(data);
    const file = store.pathOf(digest.toString('hex'));
    fs.mkdirSync(path.dirname(path.dirname(file)), { recursive: true });
    fs.writeFileSync(path.dirname(file), 'in the way');
    await expect(store.put(digest, data)).rejects.toMatchObject({ code: 'ERR_REPO_IO' });
    expect(fs.readdirSync(store.tmpDir)).toEqual([]);
  });

  it('encodes chunk files as the module does (the worker runs a copy of the format): same header, same check, and either side reads the other', async () => {
    setChunkWorkerCount(2);
    const pool = chunkPool()!;
    for (const [codec, data] of [[ZSTD, content('text', 200_000, 10)], [DEFLATE, content('text', 70_000, 11)], [ZSTD, content('random', 50_000, 12)], [NONE, content('text', 9_000, 13)]] as Array<[Codec, Buffer]>) {
      const digest = sha(data);
      const onWorker = await encodeOnWorker(pool, data, codec.id, codec.level, digest);
      const here = await encodeChunkFile(data, codec, digest);
      expect(onWorker.subarray(0, 16).equals(here.header), codec.name).toBe(true);
      expect(Buffer.from(await decodeChunkFile(onWorker, digest)).equals(data), codec.name).toBe(true);
      const stored = Buffer.concat([here.header, here.payload]);
      expect((await decodeChunkOnWorker(pool, stored, digest)).raw.equals(data), codec.name).toBe(true);
    }
  });

  it('decodes a fetched object into a file (restore from a bucket): verified before anything is written', async () => {
    setChunkWorkerCount(2);
    const pool = chunkPool()!;
    const data = content('text', 300_000, 9);
    const digest = sha(data);
    const { header, payload } = await encodeChunkFile(data, ZSTD, digest);
    const stored = Buffer.concat([header, payload]);
    const p = path.join(dir(), 'restored');
    const fd = fs.openSync(p, 'w+');
    try {
      const bad = Buffer.from(stored);
      bad[bad.length >> 1]! ^= 0x20;
      await expect(decodeChunkToFileOnWorker(pool, bad, digest, undefined, fd, 8192)).rejects.toMatchObject({ code: 'CORRUPT' });
      expect(fs.fstatSync(fd).size).toBe(0);
      expect(await decodeChunkToFileOnWorker(pool, stored, digest, undefined, fd, 8192)).toBe(data.length);
      expect(fs.readFileSync(p).subarray(8192).equals(data)).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('spreads tasks over its workers and fails the tasks of a worker that dies', async () => {
    const source = `
      const { parentPort } = require('node:worker_threads');
      parentPort.on('message', (m) => {
        if (m.op === 'die') process.exit(3);
        setTimeout(() => parentPort.postMessage({ id: m.id, ok: true, value: m.n * 2 }), 20);
      });`;
    const pool = new WorkerPool({ source, size: 2 });
    try {
      const runs = Array.from({ length: 6 }, (_, n) => pool.run<number>({ op: 'double', n }));
      expect(pool.load()).toEqual([3, 3]);
      expect(await Promise.all(runs)).toEqual([0, 2, 4, 6, 8, 10]);
      await expect(pool.run({ op: 'die' })).rejects.toMatchObject({ code: 'EWORKER' });
      expect(await pool.run<number>({ op: 'double', n: 21 })).toBe(42); // replaced
    } finally {
      await pool.close();
    }
    await expect(pool.run({ op: 'double', n: 1 })).rejects.toMatchObject({ code: 'ESHUTDOWN' });
  });
});
