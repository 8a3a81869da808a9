/**
 * The chunk workers: reading, decompressing and verifying chunk files, and hashing chunks for a
 * backup, on worker threads (util/worker-pool.ts), so the work spreads over every core and the
 * event loop only schedules I/O and answers protocol requests.
 *
 * Design notes:
 *  - `load` does the whole read path of one chunk file in the worker: open, read the 16-byte header
 *    and the payload (synchronously: page-cache reads cost less than a thread-pool round trip),
 *    decompress, check against the name. Only a verified chunk is answered; anything else is an
 *    error code (MISSING, CORRUPT, IO) the ChunkStore turns into ERR_CHUNK_MISSING /
 *    ERR_CHUNK_CORRUPT / ERR_REPO_IO. The check is the CRC-32 of name and bytes a chunk's header
 *    carries (format.ts; in an encrypted repository, inside the envelope the GCM tag authenticated),
 *    or the full digest (sha256, or the HMAC of an encrypted repository) for chunks without one and
 *    when the task says `full` (verify): docs/repository-format.md, "What a read proves".
 *  - Compressed payloads are read into a few reused buffers per worker (a fresh 1 MiB allocation
 *    per chunk costs page faults and GC); an uncompressed (codec 0) payload is read straight into
 *    the chunk's place (below).
 *  - Where a chunk is decoded depends on who needs it (`placer`): `load` decodes into new memory
 *    that is moved to the caller; `loadInto` into shared memory the caller owns (a
 *    SharedArrayBuffer: a migration's buffer), so a copier streaming a disk allocates and moves
 *    nothing per chunk; `loadTo` (restore to a file) into a spare buffer of the worker, then
 *    writes it to a file descriptor the caller holds open: the chunk never reaches the event
 *    loop (`decodeTo` does the same with an object fetched from a bucket). Write failures are
 *    WRITE_ENOSPC / WRITE_EIO, apart from the chunk's own errors.
 *  - zstd: with the native addon (src/native/zstd.c, libzstd) the frame is decompressed
 *    synchronously, straight into that place, and the fast check is libdeflate's CRC-32
 *    (src/native/crc32.c: 8 GB/s against zlib.crc32's 2.7 on the test machine; it was a third of a
 *    worker's time in a migration). Without it, @mongodb-js/zstd's binding runs it on
 *    libuv's pool and returns memory of its own (which V8 cannot move: it is copied once into
 *    place). Measured on 2 cores, a 1 GiB VM-like point: see docs/repository-format.md.
 *  - `encode` compresses a backup's new chunk (zstd natively into a spare buffer) and answers the
 *    chunk file's bytes, its fast check computed there too: the event loop only writes the file.
 *  - `hash` reads a backup's chunk in shared memory (the reader's buffer, ingest.ts), says whether
 *    it is all zero and gives its sha256 (HMAC-SHA256 with an encrypted repository's id key);
 *    `store` then compresses and writes it from the same memory (a local plaintext repository).
 *  - Encrypted repositories (repo-crypto.ts): `load` and `decode` (the stored bytes of an object
 *    fetched from a bucket, moved in and back) open the envelope (AES-256-GCM, bound to the
 *    digest) before decompressing, then check as above; `seal` encrypts a chunk file for upload.
 *    The subkeys travel with each task (64 bytes, cloned): one pool serves any repository. The
 *    envelope code is a copy of repo-crypto.ts's (this runs from source text); a unit test checks
 *    that both agree.
 *  - The worker is an eval worker (source text, see util/worker-pool.ts) that loads its modules
 *    with import(), so it runs whether the process treats eval code as CommonJS or as a module
 *    (`--input-type=module` is inherited by workers); the zstd binding and the native addon are
 *    required by the absolute paths the parent resolves.
 */
import { createRequire } from 'node:module';
import os from 'node:os';
import { ADDON_PATH } from '../native/addon.js';
import { WorkerPool } from '../util/worker-pool.js';
import { CHUNK_FILE_VERSION, CHUNK_FLAG_CHECK, CHUNK_HEADER_BYTES, CHUNK_MAGIC } from './format.js';
import { ENVELOPE_HEADER_BYTES, ENVELOPE_MAGIC, ENVELOPE_VERSION, ObjectKind, type ObjectKindName, type RepoKeys } from './repo-crypto.js';

const SOURCE = String.raw`
(async () => {
const { parentPort, workerData } = await import('node:worker_threads');
const fs = await import('node:fs');
const crypto = await import('node:crypto');
const zlib = await import('node:zlib');
const { createRequire } = await import('node:module');
const zstd = createRequire(workerData.zstd)(workerData.zstd);
// The native addon's zstd functions (src/native/zstd.c), when it was built.
let native;
try {
  native = workerData.addon ? createRequire(workerData.addon)(workerData.addon) : undefined;
  if (typeof native?.zstdDecompressInto !== 'function' || typeof native?.zstdCompressInto !== 'function') native = undefined;
} catch {
  native = undefined;
}
// The fast check (format.ts chunkCheck: CRC-32 of name, then bytes): libdeflate's through the addon
// (src/native/crc32.c, about 3x zlib.crc32), else zlib's. Both give the same value.
const crc32 = typeof native?.crc32 === 'function' ? native.crc32 : zlib.crc32;
const checkOf = (raw, digest) => crc32(raw, crc32(digest)) >>> 0;
const HEADER = workerData.headerBytes, MAGIC = workerData.magic, VERSION = workerData.version, FLAG_CHECK = workerData.flagCheck;
const ENV_HEADER = workerData.envHeaderBytes, ENV_MAGIC = workerData.envMagic, ENV_VERSION = workerData.envVersion;

class TaskError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}
const spare = [];
function take(n) {
  const i = spare.findIndex((b) => b.length >= n);
  if (i >= 0) return spare.splice(i, 1)[0];
  return Buffer.allocUnsafeSlow(Math.max(n, 64 * 1024));
}
function give(b) { if (spare.length < 4) spare.push(b); }
function readFully(fd, buf, pos) {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, pos + done);
    if (n === 0) throw new TaskError('CORRUPT', 'is truncated');
    done += n;
  }
}
// Writes all of b at pos; a failure is WRITE_ENOSPC or WRITE_EIO (the target's, not the chunk's).
function writeFully(fd, b, pos) {
  let done = 0;
  try {
    while (done < b.length) done += fs.writeSync(fd, b, done, b.length - done, pos + done);
  } catch (e) {
    throw new TaskError(e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === 'EFBIG' ? 'WRITE_ENOSPC' : 'WRITE_EIO', e.message);
  }
}
// Encrypted repositories (repo-crypto.ts has the same envelope code; a unit test keeps them equal).
function unsealChunk(encKey, digest, b) {
  if (b.length < ENV_HEADER + 12 + 16 || b.readUInt32BE(0) !== ENV_MAGIC || b[4] !== ENV_VERSION || b[5] !== 1) throw new TaskError('CORRUPT', 'does not decrypt (bad envelope)');
  try {
    const d = crypto.createDecipheriv('aes-256-gcm', encKey, b.subarray(ENV_HEADER, ENV_HEADER + 12));
    d.setAAD(Buffer.concat([b.subarray(0, ENV_HEADER), digest]));
    d.setAuthTag(b.subarray(b.length - 16));
    const plain = d.update(b.subarray(ENV_HEADER + 12, b.length - 16));
    d.final(); // checks the tag; GCM has no bytes left to give here
    return plain;
  } catch (e) {
    throw new TaskError('CORRUPT', 'does not decrypt (wrong key, damaged, or another object)');
  }
}
function seal(encKey, kind, id, b) {
  const h = Buffer.alloc(ENV_HEADER);
  h.writeUInt32BE(ENV_MAGIC, 0);
  h[4] = ENV_VERSION;
  h[5] = kind;
  const nonce = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', encKey, nonce);
  c.setAAD(Buffer.concat([h, id]));
  const out = Buffer.allocUnsafeSlow(ENV_HEADER + 12 + b.length + 16);
  h.copy(out, 0);
  nonce.copy(out, ENV_HEADER);
  let pos = ENV_HEADER + 12;
  pos += c.update(b).copy(out, pos);
  pos += c.final().copy(out, pos);
  c.getAuthTag().copy(out, pos);
  return out;
}
function digestOf(raw, keys) {
  return keys ? crypto.createHmac('sha256', keys.idKey).update(raw).digest() : crypto.createHash('sha256').update(raw).digest();
}
// Decoding a chunk into the buffer its answer needs (see the design notes): place(n) gives a
// Buffer of n bytes, once per task -- new memory to move ('load'), the caller's shared memory
// ('loadInto'), or a spare buffer of this worker ('loadTo').
function placer(make) {
  let b;
  return (n) => (b ??= make(n));
}
// The payload decompressed: into place(rawLength) with the native addon (zstd; exactly rawLength
// bytes, all of which zstd may write), else new memory.
async function decompress(codec, payload, rawLength, place) {
  try {
    if (codec === 2 && native) {
      const dst = place(rawLength);
      return dst.subarray(0, native.zstdDecompressInto(payload, dst));
    }
    return codec === 2 ? await zstd.decompress(payload) : zlib.inflateRawSync(payload, { maxOutputLength: Math.max(rawLength, 1) });
  } catch (e) {
    if (e instanceof TaskError) throw e;
    throw new TaskError('CORRUPT', 'does not decompress');
  }
}
// A chunk file's header (format.ts): codec, raw length and the fast check (undefined: none).
function header(h) {
  const flags = h.readUInt16BE(6);
  if (h.readUInt32BE(0) !== MAGIC || h[4] !== VERSION || (flags & ~FLAG_CHECK) !== 0) throw new TaskError('CORRUPT', 'has a bad header');
  if (h[5] > 2) throw new TaskError('CORRUPT', 'has unknown codec ' + h[5]);
  return { codec: h[5], rawLength: h.readUInt32BE(8), check: flags & FLAG_CHECK ? h.readUInt32BE(12) : undefined };
}
// Whether raw is the chunk named digest: by the fast check (CRC-32 of name and bytes) when the file
// has one and 'full' does not ask for the digest, else by the digest itself (sha256, or the HMAC of
// an encrypted repository, whose envelope's tag has already authenticated the file and its check).
function verified(raw, digest, keys, check, full) {
  if (check !== undefined && !full) return checkOf(raw, digest) === check;
  return digestOf(raw, keys).equals(digest);
}
// A verified chunk in place(): copied there unless it was decoded there.
function settle(raw, h, digest, keys, place, full) {
  if (raw.length !== h.rawLength || !verified(raw, digest, keys, h.check, full)) throw new TaskError('CORRUPT', 'is corrupt (content does not match its digest)');
  const dst = place(raw.length);
  if (dst.buffer !== raw.buffer || dst.byteOffset !== raw.byteOffset) raw.copy(dst);
  return dst;
}
// A whole stored chunk (header + payload, sealed if keys) -> the verified chunk in place().
async function decodeStored(stored, digest, keys, place, full) {
  const b = keys ? unsealChunk(keys.encKey, digest, stored) : stored;
  if (b.length < HEADER) throw new TaskError('CORRUPT', 'has a bad header');
  const h = header(b), payload = b.subarray(HEADER);
  const raw = h.codec === 0 ? payload : await decompress(h.codec, payload, h.rawLength, place);
  return settle(raw, h, digest, keys, place, full);
}
// A chunk file -> the verified chunk in place().
async function load(file, digest, keys, place, full) {
  if (keys) {
    let stored;
    try {
      stored = fs.readFileSync(file);
    } catch (e) {
      throw new TaskError(e.code === 'ENOENT' ? 'MISSING' : 'IO', e.message);
    }
    return decodeStored(stored, digest, keys, place, full);
  }
  let fd;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new TaskError(e.code === 'ENOENT' ? 'MISSING' : e.code === 'ENOSPC' ? 'ENOSPC' : 'IO', e.message);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < HEADER) throw new TaskError('CORRUPT', 'has a bad header');
    const hb = Buffer.allocUnsafe(HEADER);
    readFully(fd, hb, 0);
    const h = header(hb), plen = size - HEADER;
    if (h.codec === 0) {
      if (plen !== h.rawLength) throw new TaskError('CORRUPT', 'is corrupt (content does not match its digest)');
      const raw = place(h.rawLength);
      readFully(fd, raw, HEADER);
      return settle(raw, h, digest, undefined, place, full);
    }
    const buf = take(plen);
    try {
      const payload = buf.subarray(0, plen);
      readFully(fd, payload, HEADER);
      fs.closeSync(fd);
      fd = undefined;
      return settle(await decompress(h.codec, payload, h.rawLength, place), h, digest, undefined, place, full);
    } finally {
      give(buf);
    }
  } catch (e) {
    if (e instanceof TaskError) throw e;
    throw new TaskError(e.code === 'ENOENT' ? 'MISSING' : 'IO', e.message);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
// A chunk file's two parts (format.ts: header with the fast check, payload): compressed with codec
// (zstd natively into a spare buffer, else the binding; deflate by zlib) unless that does not
// shrink it (then codec 0). spare, when set, is the buffer payload views: give() it back after use.
async function encodeParts(raw, codec, level, digest) {
  const check = checkOf(raw, digest);
  let payload = raw, spareBuf;
  if (codec === 2 && native) {
    spareBuf = take(native.zstdCompressBound(raw.length));
    payload = spareBuf.subarray(0, native.zstdCompressInto(raw, spareBuf, level));
  } else if (codec === 2) payload = await zstd.compress(raw, level);
  else if (codec === 1) payload = zlib.deflateRawSync(raw, { level });
  if (payload.length >= raw.length) {
    codec = 0;
    payload = raw;
  }
  const header = Buffer.allocUnsafe(HEADER);
  header.writeUInt32BE(MAGIC, 0);
  header[4] = VERSION;
  header[5] = codec;
  header.writeUInt16BE(FLAG_CHECK, 6);
  header.writeUInt32BE(raw.length, 8);
  header.writeUInt32BE(check, 12);
  return { header, payload, spare: spareBuf };
}
// A chunk file's bytes in new memory of their own (to be moved to the caller).
async function encode(raw, codec, level, digest) {
  const { header, payload, spare: spareBuf } = await encodeParts(raw, codec, level, digest);
  try {
    const out = Buffer.allocUnsafeSlow(HEADER + payload.length);
    header.copy(out, 0);
    payload.copy(out, HEADER);
    return out;
  } finally {
    if (spareBuf) give(spareBuf);
  }
}
// Stores a chunk file as ChunkStore.put does (chunk-store.ts), all on this thread: nothing when
// file exists; else encoded, written to a temp file in tmpDir and renamed into place. Answers the
// file's size, or 0 when it was there. A failure to write is STORE_ENOSPC or STORE_EIO.
const madeDirs = new Set();
async function store(raw, codec, level, digest, file, tmpDir) {
  if (fs.existsSync(file)) return 0;
  const { header, payload, spare: spareBuf } = await encodeParts(raw, codec, level, digest);
  try {
    const tmp = tmpDir + '/chunk-' + digest.toString('hex') + '-' + crypto.randomBytes(4).toString('hex');
    try {
      placeFile(header, payload, file, tmp);
    } catch (e) {
      // A directory made earlier may have gone since (gc removes empty ones): once more, afresh.
      if (e.code !== 'ENOENT') throw e;
      madeDirs.clear();
      placeFile(header, payload, file, tmp);
    }
    return HEADER + payload.length;
  } catch (e) {
    throw new TaskError(e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === 'WRITE_ENOSPC' ? 'STORE_ENOSPC' : 'STORE_EIO', e.message);
  } finally {
    if (spareBuf) give(spareBuf);
  }
}
// header + payload into tmp, renamed to file (its directory made first); tmp is gone on failure.
function placeFile(header, payload, file, tmp) {
  const dir = file.slice(0, file.lastIndexOf('/'));
  if (!madeDirs.has(dir)) {
    fs.mkdirSync(dir, { recursive: true });
    if (madeDirs.size >= 65536) madeDirs.clear(); // a repository has at most 65,536 chunk directories
    madeDirs.add(dir);
  }
  let fd = fs.openSync(tmp, 'w');
  try {
    writeFully(fd, header, 0);
    writeFully(fd, payload, HEADER);
    fs.closeSync(fd);
    fd = undefined; // closed: never close a number another thread may have been given since
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
const ZEROES = Buffer.alloc(1024 * 1024);
function isZero(b) {
  for (let pos = 0; pos < b.length; pos += ZEROES.length) {
    const n = Math.min(ZEROES.length, b.length - pos);
    if (!b.subarray(pos, pos + n).equals(ZEROES.subarray(0, n))) return false;
  }
  return true;
}
function keysOf(m) {
  return m.encKey ? { encKey: Buffer.from(m.encKey), idKey: Buffer.from(m.idKey) } : undefined;
}
parentPort.on('message', async (m) => {
  try {
    if (m.op === 'load') {
      const raw = await load(m.file, Buffer.from(m.digest), keysOf(m), placer((n) => Buffer.allocUnsafeSlow(n)), m.full);
      parentPort.postMessage({ id: m.id, ok: true, value: raw.buffer }, [raw.buffer]);
    } else if (m.op === 'loadInto') {
      const into = placer((n) => {
        if (n > m.length) throw new TaskError('CORRUPT', 'has ' + n + ' bytes, more than ' + m.length);
        return Buffer.from(m.sab, m.offset, n);
      });
      const raw = await load(m.file, Buffer.from(m.digest), keysOf(m), into);
      parentPort.postMessage({ id: m.id, ok: true, value: raw.length });
    } else if (m.op === 'loadTo') {
      let spareBuf;
      try {
        const raw = await load(m.file, Buffer.from(m.digest), keysOf(m), placer((n) => (spareBuf = take(n)).subarray(0, n)));
        writeFully(m.fd, raw, m.offset);
        parentPort.postMessage({ id: m.id, ok: true, value: raw.length });
      } finally {
        if (spareBuf) give(spareBuf);
      }
    } else if (m.op === 'decode') {
      const raw = await decodeStored(Buffer.from(m.buf, m.offset, m.length), Buffer.from(m.digest), keysOf(m), placer((n) => Buffer.allocUnsafeSlow(n)), m.full);
      // The stored bytes go back too (the disk cache keeps them); raw is new memory, moved.
      parentPort.postMessage({ id: m.id, ok: true, value: { raw: raw.buffer, buf: m.buf } }, [raw.buffer, m.buf]);
    } else if (m.op === 'decodeTo') {
      let spareBuf;
      try {
        const raw = await decodeStored(Buffer.from(m.buf, m.offset, m.length), Buffer.from(m.digest), keysOf(m), placer((n) => (spareBuf = take(n)).subarray(0, n)));
        writeFully(m.fd, raw, m.pos);
        parentPort.postMessage({ id: m.id, ok: true, value: raw.length });
      } finally {
        if (spareBuf) give(spareBuf);
      }
    } else if (m.op === 'encode') {
      const out = await encode(Buffer.from(m.raw.buffer, m.raw.byteOffset, m.raw.byteLength), m.codec, m.level, Buffer.from(m.digest));
      parentPort.postMessage({ id: m.id, ok: true, value: out.buffer }, [out.buffer]);
    } else if (m.op === 'seal') {
      const out = seal(Buffer.from(m.encKey), m.kind, Buffer.from(m.name), Buffer.from(m.buf, m.offset, m.length));
      parentPort.postMessage({ id: m.id, ok: true, value: out.buffer }, [out.buffer]);
    } else if (m.op === 'store') {
      const bytes = await store(Buffer.from(m.sab, m.offset, m.length), m.codec, m.level, Buffer.from(m.digest), m.file, m.tmpDir);
      parentPort.postMessage({ id: m.id, ok: true, value: bytes });
    } else if (m.op === 'hash') {
      const b = Buffer.from(m.sab, m.offset, m.length);
      const zero = isZero(b);
      const digest = zero ? undefined : digestOf(b, m.idKey ? { idKey: Buffer.from(m.idKey) } : undefined);
      parentPort.postMessage({ id: m.id, ok: true, value: { zero, digest } });
    } else {
      throw new TaskError('EINVAL', 'unknown op ' + m.op);
    }
  } catch (e) {
    parentPort.postMessage({ id: m.id, ok: false, error: { code: e.code || 'EWORKER', message: String(e.message || e) } });
  }
});
})();
`;

let pool: WorkerPool | undefined;
let configured: number | undefined;
let nativeZstd = true;

/** Worker threads for chunk work: the configured count, else one per core (os.availableParallelism). */
export function chunkWorkerCount(): number {
  return configured ?? os.availableParallelism();
}

/**
 * Sets the number of chunk worker threads (config `workers`); 0 runs everything on the main
 * thread (libuv's pool for zstd and WebCrypto, as before the pool existed). `nativeZstd: false`
 * leaves the native addon's zstd unused (tests and benchmarks of the binding's fallback). Takes effect
 * for the next pool created: a running pool is closed and replaced.
 */
export function setChunkWorkerCount(n: number | undefined, opts: { nativeZstd?: boolean } = {}): void {
  if (n !== undefined && !(Number.isInteger(n) && n >= 0 && n <= 256)) throw new RangeError(`chunk workers must be 0..256 (got ${n})`);
  configured = n;
  nativeZstd = opts.nativeZstd ?? true;
  const old = pool;
  pool = undefined;
  void old?.close();
}

/** The shared pool, or undefined when workers are disabled (0). */
export function chunkPool(): WorkerPool | undefined {
  const n = chunkWorkerCount();
  if (n === 0) return undefined;
  pool ??= new WorkerPool({
    source: SOURCE,
    size: n,
    workerData: {
      zstd: createRequire(import.meta.url).resolve('@mongodb-js/zstd/bindings.js'),
      addon: nativeZstd ? ADDON_PATH : undefined,
      headerBytes: CHUNK_HEADER_BYTES,
      flagCheck: CHUNK_FLAG_CHECK,
      magic: CHUNK_MAGIC,
      version: CHUNK_FILE_VERSION,
      envHeaderBytes: ENVELOPE_HEADER_BYTES,
      envMagic: ENVELOPE_MAGIC,
      envVersion: ENVELOPE_VERSION,
    },
  });
  return pool;
}

/** The subkeys as a task carries them (copies: a task's fields are cloned). */
function keyFields(keys: RepoKeys | undefined): Record<string, Uint8Array> {
  return keys ? { encKey: Uint8Array.from(keys.encKey), idKey: Uint8Array.from(keys.idKey) } : {};
}

/** `buf` if it owns its ArrayBuffer from offset 0 (it can be moved), else a copy that does. */
function movable(buf: Uint8Array): Uint8Array {
  return buf.byteOffset === 0 && buf.buffer.byteLength === buf.byteLength && buf.buffer instanceof ArrayBuffer ? buf : Uint8Array.from(buf);
}

/**
 * Reads, decrypts (with `keys`), decompresses and verifies one chunk file on a worker (`full`: by
 * the full digest even where the file carries the fast check); rejects with WorkerPoolError codes
 * MISSING, CORRUPT, IO.
 */
export async function loadChunkOnWorker(p: WorkerPool, file: string, digest: Uint8Array, keys?: RepoKeys, full = false): Promise<Buffer> {
  const ab = await p.run<ArrayBuffer>({ op: 'load', file, digest: Uint8Array.from(digest), full, ...keyFields(keys) });
  return Buffer.from(ab);
}

/**
 * Reads, decrypts (with `keys`), decompresses and verifies one chunk file on a worker, which copies
 * it into `dst` (a view of a SharedArrayBuffer); resolves with the chunk's length. Rejects with
 * WorkerPoolError codes MISSING, CORRUPT (also for a chunk longer than `dst`), IO.
 */
export async function loadChunkIntoOnWorker(p: WorkerPool, file: string, digest: Uint8Array, keys: RepoKeys | undefined, dst: Uint8Array): Promise<number> {
  if (!(dst.buffer instanceof SharedArrayBuffer)) throw new TypeError('loadChunkIntoOnWorker needs a view of a SharedArrayBuffer');
  return p.run<number>({ op: 'loadInto', file, digest: Uint8Array.from(digest), sab: dst.buffer, offset: dst.byteOffset, length: dst.byteLength, ...keyFields(keys) });
}

/**
 * Reads, decrypts (with `keys`), decompresses and verifies one chunk file on a worker, and writes
 * the chunk to `fd` at `offset` there; resolves with its length. Rejects with WorkerPoolError codes
 * MISSING, CORRUPT, IO (the chunk) or WRITE_ENOSPC, WRITE_EIO (the target). `fd` must stay open
 * until this settles.
 */
export async function loadChunkToFileOnWorker(p: WorkerPool, file: string, digest: Uint8Array, keys: RepoKeys | undefined, fd: number, offset: number): Promise<number> {
  return p.run<number>({ op: 'loadTo', file, digest: Uint8Array.from(digest), fd, offset, ...keyFields(keys) });
}

/**
 * Decrypts (with `keys`), decompresses and verifies a chunk's stored bytes on a worker (an object
 * fetched from a bucket). `stored` is moved there and back: use the answer's `stored`, the
 * argument may be detached. Rejects with WorkerPoolError code CORRUPT.
 */
export async function decodeChunkOnWorker(p: WorkerPool, stored: Uint8Array, digest: Uint8Array, keys?: RepoKeys, full = false): Promise<{ raw: Buffer; stored: Buffer }> {
  const own = movable(stored);
  const ab = own.buffer as ArrayBuffer;
  const r = await p.run<{ raw: ArrayBuffer; buf: ArrayBuffer }>({ op: 'decode', buf: ab, offset: 0, length: own.byteLength, digest: Uint8Array.from(digest), full, ...keyFields(keys) }, [ab]);
  return { raw: Buffer.from(r.raw), stored: Buffer.from(r.buf) };
}

/**
 * decodeChunkOnWorker, and the chunk written to `fd` at `offset` there (a restore from a bucket to a
 * file); `stored` is moved there and not given back. Rejects with WorkerPoolError codes CORRUPT
 * (the chunk) or WRITE_ENOSPC, WRITE_EIO (the target). `fd` must stay open until this settles.
 */
export async function decodeChunkToFileOnWorker(p: WorkerPool, stored: Uint8Array, digest: Uint8Array, keys: RepoKeys | undefined, fd: number, offset: number): Promise<number> {
  const own = movable(stored);
  const ab = own.buffer as ArrayBuffer;
  return p.run<number>({ op: 'decodeTo', buf: ab, offset: 0, length: own.byteLength, digest: Uint8Array.from(digest), fd, pos: offset, ...keyFields(keys) }, [ab]);
}

/**
 * The stored bytes of chunk `digest` (header with the fast check + payload, format.ts), compressed
 * on a worker with codec `codecId` at `level` (codec.ts) unless that does not shrink it. `raw` is
 * shared with the worker when it is shared memory, else copied (the caller keeps it either way).
 */
export async function encodeOnWorker(p: WorkerPool, raw: Uint8Array, codecId: number, level: number, digest: Uint8Array): Promise<Buffer> {
  return Buffer.from(await p.run<ArrayBuffer>({ op: 'encode', raw, codec: codecId, level, digest: Uint8Array.from(digest) }));
}

/** Encrypts `plain` as an object of `kind` named `name` (repo-crypto.ts envelope) on a worker. `plain` is moved (detached). */
export async function sealOnWorker(p: WorkerPool, encKey: Uint8Array, kind: ObjectKindName, name: Uint8Array, plain: Uint8Array): Promise<Buffer> {
  const own = movable(plain);
  const ab = own.buffer as ArrayBuffer;
  const out = await p.run<ArrayBuffer>({ op: 'seal', encKey: Uint8Array.from(encKey), kind: ObjectKind[kind], name: Uint8Array.from(name), buf: ab, offset: 0, length: own.byteLength }, [ab]);
  return Buffer.from(out);
}

/**
 * Zero check and digest of `buf` on a worker: sha256, or HMAC-SHA256 with `idKey` (an encrypted
 * repository's chunk names). `buf` is read there in place when it is shared memory (a backup
 * reader's buffer, ingest.ts); anything else is copied into shared memory first.
 */
export async function hashOnWorker(p: WorkerPool, buf: Uint8Array, idKey?: Uint8Array): Promise<{ zero: boolean; digest: Buffer | undefined }> {
  const shared = buf.buffer instanceof SharedArrayBuffer ? buf : sharedCopy(buf);
  const r = await p.run<{ zero: boolean; digest?: Uint8Array }>({ op: 'hash', sab: shared.buffer, offset: shared.byteOffset, length: shared.byteLength, ...(idKey ? { idKey: Uint8Array.from(idKey) } : {}) });
  return { zero: r.zero, digest: r.digest ? Buffer.from(r.digest) : undefined };
}

function sharedCopy(buf: Uint8Array): Uint8Array {
  const out = new Uint8Array(new SharedArrayBuffer(buf.byteLength));
  out.set(buf);
  return out;
}

/**
 * Stores a plaintext chunk in a local repository, all on a worker (ChunkStore.put's steps: nothing
 * if `file` exists, else encoded, written to a temp file in `tmpDir` and renamed to `file`). `raw`
 * is shared memory the worker reads in place. Resolves with the file's size, 0 when it existed;
 * rejects with WorkerPoolError STORE_ENOSPC / STORE_EIO.
 */
export async function storeOnWorker(p: WorkerPool, raw: Uint8Array, digest: Uint8Array, codecId: number, level: number, file: string, tmpDir: string): Promise<number> {
  if (!(raw.buffer instanceof SharedArrayBuffer)) throw new TypeError('storeOnWorker takes shared memory');
  return p.run<number>({ op: 'store', sab: raw.buffer, offset: raw.byteOffset, length: raw.byteLength, digest: Uint8Array.from(digest), codec: codecId, level, file, tmpDir });
}
