/**
 * Client-side encryption of a repository (optional, per repository; docs/repository-format.md,
 * "Encrypted repositories"): what leaves the gateway for someone else's storage is unreadable
 * there, and the chunk names say nothing about the content.
 *
 *  - The key file holds 32 random bytes (`rebound repo keygen FILE`). Its fingerprint is
 *    HMAC-SHA256(key, "rebound key fingerprint v1"), first 16 bytes in hex: it names the key (it is
 *    in repo.json, shown by `repo info`, printed by keygen) and reveals nothing about it.
 *  - Subkeys by HKDF-SHA256 from the key, with the repository's random salt (repo.json
 *    `encryption.salt`, so one key file used for two repositories gives unrelated subkeys):
 *    info "rebound chunk ids v1" -> the id key; "rebound encryption v1" -> the AES-256-GCM key.
 *  - Chunk names are HMAC-SHA256(id key, uncompressed chunk) instead of sha256(chunk): dedup still
 *    works inside the repository, and a name cannot be checked against known content.
 *  - Every encrypted object is an envelope (ENVELOPE_* below): 8-byte header ("RBEN", version,
 *    kind), a random 96-bit nonce, the AES-256-GCM ciphertext, the 16-byte tag. The associated
 *    data is the header plus the object's identity (a chunk's 32-byte digest, or a metadata
 *    object's key below the repository prefix), so an object moved to another name, or to another
 *    kind, fails to open. A chunk's plaintext is the ordinary chunk file (16-byte header +
 *    compressed payload), so compression runs before encryption.
 *  - A wrong key, a flipped byte, a swapped object: the tag does not match and the object does not
 *    open (ERR_CHUNK_CORRUPT for a chunk, ERR_REPO_CORRUPT for metadata), never wrong data.
 *
 * The chunk workers (chunk-worker.ts) carry their own copy of the envelope code (they run from
 * source text); test/unit/repo/repo-crypto.test.ts checks that both agree.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { ReboundError } from '../errors.js';

export const KEY_BYTES = 32;
export const ENVELOPE_MAGIC = 0x5242454e; // "RBEN"
export const ENVELOPE_VERSION = 1;
export const ENVELOPE_HEADER_BYTES = 8;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
/** Bytes an envelope adds to its plaintext: header, nonce, tag. */
export const ENVELOPE_OVERHEAD = ENVELOPE_HEADER_BYTES + NONCE_BYTES + TAG_BYTES;

/** What an encrypted object holds; part of the associated data. */
export const ObjectKind = { chunk: 1, metadata: 2 } as const;
export type ObjectKindName = keyof typeof ObjectKind;

export const ENCRYPTION_ALGORITHM = 'aes-256-gcm';
export const ENCRYPTION_KDF = 'hkdf-sha256';
export const CHUNK_ID_ALGORITHM = 'hmac-sha256';

/** repo.json `encryption` of an encrypted repository. */
export interface EncryptionDescriptor {
  algorithm: typeof ENCRYPTION_ALGORITHM;
  kdf: typeof ENCRYPTION_KDF;
  chunkIds: typeof CHUNK_ID_ALGORITHM;
  /** 16 random bytes, hex: the HKDF salt. */
  salt: string;
  /** The key's fingerprint (keyFingerprint). */
  fingerprint: string;
}

/** The subkeys of one repository. Never logged, never sent by the API. */
export interface RepoKeys {
  /** HMAC-SHA256 key of the chunk names. */
  idKey: Buffer;
  /** AES-256-GCM key of every object. */
  encKey: Buffer;
  fingerprint: string;
}

export function keyFingerprint(key: Uint8Array): string {
  return crypto.createHmac('sha256', key).update('rebound key fingerprint v1').digest().subarray(0, 16).toString('hex');
}

export function deriveKeys(key: Uint8Array, salt: string): RepoKeys {
  const s = Buffer.from(salt, 'hex');
  const sub = (info: string): Buffer => Buffer.from(crypto.hkdfSync('sha256', key, s, info, KEY_BYTES));
  return { idKey: sub('rebound chunk ids v1'), encKey: sub('rebound encryption v1'), fingerprint: keyFingerprint(key) };
}

/** The `encryption` section of a new repository's descriptor for `key`. */
export function newEncryptionDescriptor(key: Uint8Array): EncryptionDescriptor {
  return { algorithm: ENCRYPTION_ALGORITHM, kdf: ENCRYPTION_KDF, chunkIds: CHUNK_ID_ALGORITHM, salt: crypto.randomBytes(16).toString('hex'), fingerprint: keyFingerprint(key) };
}

/**
 * Reads a key file: exactly 32 bytes (as keygen writes them), or 64 hex digits with an optional
 * newline (a key kept in a password manager). ERR_REPO_KEY if it is neither, or if group or others
 * may read it (as for TLS keys and PSK files: chmod 600).
 */
export function readKeyFile(file: string): Buffer {
  let data: Buffer;
  try {
    const mode = fs.statSync(file).mode;
    if ((mode & 0o044) !== 0) {
      throw new ReboundError('ERR_REPO_KEY', `the repository key file ${file} is readable by group or others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); chmod 600 it`);
    }
    data = fs.readFileSync(file);
  } catch (err) {
    if (err instanceof ReboundError) throw err;
    throw new ReboundError('ERR_REPO_KEY', `cannot read the repository key file ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (data.length === KEY_BYTES) return data;
  const text = data.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  throw new ReboundError('ERR_REPO_KEY', `${file} is not a repository key file: it must hold 32 bytes (rebound repo keygen FILE) or 64 hex digits`);
}

/** Writes a new key file (32 random bytes, mode 600); refuses to overwrite. Returns its fingerprint. */
export function generateKeyFile(file: string): string {
  const key = crypto.randomBytes(KEY_BYTES);
  let fd: number;
  try {
    fd = fs.openSync(file, 'wx', 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new ReboundError('ERR_INVALID_ARGUMENT', `${file} already exists: a key file is never overwritten (losing a key loses the repository)`);
    throw new ReboundError('ERR_INVALID_ARGUMENT', `cannot create ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    fs.writeSync(fd, key);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return keyFingerprint(key);
}

/**
 * The key of an encrypted repository described by `desc`, from `keyFile`: refused (ERR_REPO_KEY)
 * if there is no key file or its fingerprint is not the repository's.
 */
export function openKeys(desc: EncryptionDescriptor, keyFile: string | undefined, where: string): RepoKeys {
  if (desc.algorithm !== ENCRYPTION_ALGORITHM || desc.kdf !== ENCRYPTION_KDF || desc.chunkIds !== CHUNK_ID_ALGORITHM || !/^[0-9a-f]{32}$/.test(desc.salt ?? '')) {
    throw new ReboundError('ERR_REPO_CORRUPT', `${where}: unknown encryption ${JSON.stringify(desc)}`);
  }
  if (!keyFile) {
    throw new ReboundError('ERR_REPO_KEY', `the repository ${where} is encrypted (key fingerprint ${desc.fingerprint}): give its key file (config repoKeyFile, --repo-key-file, or repo init --encrypt)`);
  }
  const key = readKeyFile(keyFile);
  const fp = keyFingerprint(key);
  if (fp !== desc.fingerprint) {
    throw new ReboundError('ERR_REPO_KEY', `wrong key for the repository ${where}: ${keyFile} has fingerprint ${fp}, the repository's key has ${desc.fingerprint}`);
  }
  return deriveKeys(key, desc.salt);
}

// ---- envelopes -----------------------------------------------------------------------------

function header(kind: number): Buffer {
  const h = Buffer.alloc(ENVELOPE_HEADER_BYTES);
  h.writeUInt32BE(ENVELOPE_MAGIC, 0);
  h[4] = ENVELOPE_VERSION;
  h[5] = kind;
  return h;
}

function idBytes(id: Uint8Array | string): Buffer {
  return typeof id === 'string' ? Buffer.from(id, 'utf8') : Buffer.from(id.buffer, id.byteOffset, id.byteLength);
}

/** Encrypts `parts` (concatenated) as an object of `kind` named `id` (a chunk digest or a key below the prefix). */
export function seal(encKey: Uint8Array, kind: ObjectKindName, id: Uint8Array | string, parts: Uint8Array | Uint8Array[]): Buffer {
  const h = header(ObjectKind[kind]);
  const nonce = crypto.randomBytes(NONCE_BYTES);
  const c = crypto.createCipheriv('aes-256-gcm', encKey, nonce);
  c.setAAD(Buffer.concat([h, idBytes(id)]));
  const body = (Array.isArray(parts) ? parts : [parts]).map((p) => c.update(p));
  return Buffer.concat([h, nonce, ...body, c.final(), c.getAuthTag()]);
}

/**
 * Decrypts an envelope; undefined if it does not open (bad header, wrong key, damaged, or made for
 * another name or kind): callers turn that into their ERR_*_CORRUPT naming the object.
 */
export function unseal(encKey: Uint8Array, kind: ObjectKindName, id: Uint8Array | string, data: Uint8Array): Buffer | undefined {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (b.length < ENVELOPE_OVERHEAD || b.readUInt32BE(0) !== ENVELOPE_MAGIC || b[4] !== ENVELOPE_VERSION || b[5] !== ObjectKind[kind]) return undefined;
  try {
    const d = crypto.createDecipheriv('aes-256-gcm', encKey, b.subarray(ENVELOPE_HEADER_BYTES, ENVELOPE_HEADER_BYTES + NONCE_BYTES));
    d.setAAD(Buffer.concat([b.subarray(0, ENVELOPE_HEADER_BYTES), idBytes(id)]));
    d.setAuthTag(b.subarray(b.length - TAG_BYTES));
    return Buffer.concat([d.update(b.subarray(ENVELOPE_HEADER_BYTES + NONCE_BYTES, b.length - TAG_BYTES)), d.final()]);
  } catch {
    return undefined;
  }
}

/** The chunk name of `raw` in a repository with `keys` (HMAC), or without (sha256). */
export function chunkDigest(raw: Uint8Array, keys: RepoKeys | undefined): Buffer {
  return keys ? crypto.createHmac('sha256', keys.idKey).update(raw).digest() : crypto.createHash('sha256').update(raw).digest();
}

/**
 * Seals and opens the metadata objects of a repository in a bucket (manifests, indexes, config
 * files, access maps), named by their key below the prefix. Without keys both are the identity.
 */
export class MetadataSealer {
  readonly keys: RepoKeys | undefined;
  constructor(keys: RepoKeys | undefined) {
    this.keys = keys;
  }
  seal(key: string, body: Uint8Array | string): Uint8Array {
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    return this.keys ? seal(this.keys.encKey, 'metadata', key, bytes) : bytes;
  }
  /** ERR_REPO_CORRUPT naming `where` if the object does not open. */
  open(key: string, body: Buffer, where: string): Buffer {
    if (!this.keys) return body;
    const plain = unseal(this.keys.encKey, 'metadata', key, body);
    if (!plain) throw new ReboundError('ERR_REPO_CORRUPT', `${where} does not decrypt (damaged, or not this repository's object)`);
    return plain;
  }
}
