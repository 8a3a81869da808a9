/**
 * TokenStore: the HTTP API's bearer tokens.
 *
 * A token is `rbd_` + 32 random bytes in base64url (256 bits): shown once, when created, and
 * stored only as its sha256 digest (a fast hash is enough for a secret that cannot be guessed; no
 * salt or KDF needed). Each record has an id (what `rebound token revoke` names), a name, a role,
 * optional VM name patterns, its creation time and when it was last used.
 *
 * On disk: `DATA/auth/tokens.json` ({version: 1, tokens: [...]}), directory 0700, file 0600,
 * written whole to a temp file, fsynced and renamed. The first start of a daemon whose store has
 * no token creates an admin token and writes it to `DATA/auth/admin.token` (0600), where the CLI
 * run as root on the gateway finds it; revoking that token removes the file.
 *
 * `authenticate` compares the presented token's digest with every record in constant time (no
 * early exit, timingSafeEqual), so the answer time says nothing about how close a guess was.
 * lastUsedAt is kept in memory and written at most once a minute (and at close), not per request.
 * A store opened without a directory lives in memory only (tests).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { checkVmPatterns, isRole, type Role } from './permissions.js';

export const AUTH_DIR = 'auth';
export const TOKENS_FILE = 'tokens.json';
export const ADMIN_TOKEN_FILE = 'admin.token';
export const TOKEN_PREFIX = 'rbd_';
const TOKEN_BYTES = 32;
const STORE_VERSION = 1;
/** lastUsedAt reaches the disk at most this often. */
const LAST_USED_FLUSH_MS = 60_000;
const MAX_TOKENS = 1000;

/** What clients see of a token (never the token or its digest). */
export interface TokenInfo {
  id: string;
  name: string;
  role: Role;
  /** VM name patterns the token is limited to; absent: every VM. */
  vms?: string[];
  createdAt: string;
  lastUsedAt: string | null;
}

interface TokenRecord extends TokenInfo {
  /** `sha256:HEX` of the token. */
  hash: string;
}

export interface CreateTokenRequest {
  name: string;
  role: Role;
  vms?: string[];
}

export interface TokenStoreOptions {
  log?: Logger;
  now?: () => Date;
}

/** The auth directory of a data directory. */
export function authDir(dataDir: string): string {
  return path.join(dataDir, AUTH_DIR);
}

/** Where the first admin token of a data directory is written. */
export function adminTokenPath(dataDir: string): string {
  return path.join(authDir(dataDir), ADMIN_TOKEN_FILE);
}

export function digest(token: string): Buffer {
  return crypto.createHash('sha256').update(token, 'utf8').digest();
}

const NAME_RE = /^[\x21-\x7e][\x20-\x7e]{0,63}$/;

export class TokenStore {
  /** The auth directory, or undefined for an in-memory store. */
  readonly dir: string | undefined;
  readonly #records = new Map<string, TokenRecord>();
  readonly #log: Logger | undefined;
  readonly #now: () => Date;
  #writing: Promise<void> = Promise.resolve();
  #lastUsedDirty = false;
  #flushTimer: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(dir: string | undefined, opts: TokenStoreOptions) {
    this.dir = dir;
    this.#log = opts.log;
    this.#now = opts.now ?? (() => new Date());
  }

  /** A store that is never written (tests, or a daemon given tokens some other way). */
  static inMemory(opts: TokenStoreOptions = {}): TokenStore {
    return new TokenStore(undefined, opts);
  }

  /** Opens `dir` (DATA/auth), creating it 0700; a damaged tokens.json is refused, not replaced. */
  static async open(dir: string, opts: TokenStoreOptions = {}): Promise<TokenStore> {
    const store = new TokenStore(dir, opts);
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fs.chmodSync(dir, 0o700);
    } catch (err) {
      throw new ReboundError('ERR_DATA_DIR_UNUSABLE', `cannot create the token directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    const file = path.join(dir, TOKENS_FILE);
    let text: string | undefined;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new ReboundError('ERR_DATA_DIR_UNUSABLE', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (text !== undefined) {
      for (const r of parseStore(text, file)) store.#records.set(r.id, r);
      // Tighten a file someone loosened.
      fs.chmodSync(file, 0o600);
    }
    return store;
  }

  get size(): number {
    return this.#records.size;
  }

  list(): TokenInfo[] {
    return [...this.#records.values()].map(publicInfo);
  }

  get(id: string): TokenInfo | undefined {
    const r = this.#records.get(id);
    return r && publicInfo(r);
  }

  /** Creates a token; the returned `token` is the only time it exists in clear. */
  async create(req: CreateTokenRequest): Promise<{ token: string; info: TokenInfo }> {
    if (typeof req.name !== 'string' || !NAME_RE.test(req.name)) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', 'a token name is 1 to 64 printable ASCII characters, not starting with a space');
    }
    if (!isRole(req.role)) throw new ReboundError('ERR_INVALID_ARGUMENT', `unknown role '${String(req.role)}' (viewer, operator, admin)`);
    const vms = req.vms === undefined ? undefined : checkVmPatterns(req.vms);
    if (this.#records.size >= MAX_TOKENS) throw new ReboundError('ERR_INVALID_ARGUMENT', `at most ${MAX_TOKENS} tokens; revoke some first`);
    const token = TOKEN_PREFIX + crypto.randomBytes(TOKEN_BYTES).toString('base64url');
    let id: string;
    do id = crypto.randomBytes(6).toString('hex');
    while (this.#records.has(id));
    const record: TokenRecord = {
      id,
      name: req.name,
      role: req.role,
      ...(vms && vms.length ? { vms } : {}),
      createdAt: this.#now().toISOString(),
      lastUsedAt: null,
      hash: 'sha256:' + digest(token).toString('hex'),
    };
    this.#records.set(id, record);
    try {
      await this.#save();
    } catch (err) {
      this.#records.delete(id);
      throw err;
    }
    this.#log?.info('API token created', { id, name: record.name, role: record.role, ...(record.vms ? { vms: record.vms.join(',') } : {}) });
    return { token, info: publicInfo(record) };
  }

  /** Revokes a token at once; the admin.token file goes too when it holds this token. */
  async revoke(id: string): Promise<TokenInfo> {
    const r = this.#records.get(id);
    if (!r) throw new ReboundError('ERR_TOKEN_NOT_FOUND', `no token with id '${id}' (rebound token list)`);
    this.#records.delete(id);
    try {
      await this.#save();
    } catch (err) {
      this.#records.set(id, r);
      throw err;
    }
    if (this.dir) {
      const adminFile = path.join(this.dir, ADMIN_TOKEN_FILE);
      try {
        const held = fs.readFileSync(adminFile, 'utf8').trim();
        if (crypto.timingSafeEqual(digest(held), Buffer.from(r.hash.slice('sha256:'.length), 'hex'))) fs.rmSync(adminFile, { force: true });
      } catch {
        // No admin.token (or unreadable): nothing to remove.
      }
    }
    this.#log?.info('API token revoked', { id, name: r.name, role: r.role });
    return publicInfo(r);
  }

  /** The token's record, or undefined. Constant time in the token; notes the use. */
  authenticate(token: string): TokenInfo | undefined {
    const d = digest(token);
    let found: TokenRecord | undefined;
    for (const r of this.#records.values()) {
      const h = Buffer.from(r.hash.slice('sha256:'.length), 'hex');
      const same = h.length === d.length && crypto.timingSafeEqual(h, d);
      if (same) found = r;
    }
    if (!found) return undefined;
    found.lastUsedAt = this.#now().toISOString();
    this.#lastUsedDirty = true;
    this.#scheduleFlush();
    return publicInfo(found);
  }

  /**
   * First start: when the store holds no token, creates an admin token and writes it to
   * DIR/admin.token (0600). Returns that file's path, or undefined when tokens existed.
   */
  async ensureAdminToken(): Promise<string | undefined> {
    if (this.#records.size > 0 || !this.dir) return undefined;
    const { token, info } = await this.create({ name: 'admin (first start)', role: 'admin' });
    const file = path.join(this.dir, ADMIN_TOKEN_FILE);
    writeFileAtomic(file, token + '\n');
    this.#log?.warn('created the first admin API token; it is in a file readable by this user only', { file, id: info.id });
    return file;
  }

  /** Writes pending lastUsedAt times; the store stays usable. */
  async flush(): Promise<void> {
    if (this.#lastUsedDirty) await this.#save();
    await this.#writing;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    await this.flush().catch((err: unknown) => this.#log?.warn('cannot write token use times', { err: (err as Error).message }));
  }

  #scheduleFlush(): void {
    if (this.#flushTimer || this.#closed || !this.dir) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      this.flush().catch((err: unknown) => this.#log?.warn('cannot write token use times', { err: (err as Error).message }));
    }, LAST_USED_FLUSH_MS);
    this.#flushTimer.unref();
  }

  /** Serialised whole-file writes; each writes the state as of when it runs. */
  #save(): Promise<void> {
    const run = async (): Promise<void> => {
      if (!this.dir) return;
      this.#lastUsedDirty = false;
      const body = { version: STORE_VERSION, tokens: [...this.#records.values()] };
      writeFileAtomic(path.join(this.dir, TOKENS_FILE), JSON.stringify(body, null, 2) + '\n');
    };
    const p = this.#writing.then(run, run);
    this.#writing = p.catch(() => undefined);
    return p;
  }
}

function publicInfo(r: TokenRecord): TokenInfo {
  return { id: r.id, name: r.name, role: r.role, ...(r.vms ? { vms: [...r.vms] } : {}), createdAt: r.createdAt, lastUsedAt: r.lastUsedAt };
}

function parseStore(text: string, file: string): TokenRecord[] {
  const bad = (why: string): ReboundError =>
    new ReboundError('ERR_DATA_DIR_UNUSABLE', `${file} is damaged (${why}); fix or remove it (removing it revokes every token and makes a new admin token at start)`);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw bad((err as Error).message);
  }
  const d = data as { version?: unknown; tokens?: unknown };
  if (!d || typeof d !== 'object' || d.version !== STORE_VERSION || !Array.isArray(d.tokens)) throw bad(`expected {"version": ${STORE_VERSION}, "tokens": [...]}`);
  return d.tokens.map((t: unknown, i) => {
    const r = t as Partial<TokenRecord>;
    if (!r || typeof r !== 'object' || typeof r.id !== 'string' || typeof r.name !== 'string' || !isRole(r.role)) throw bad(`token ${i} has no id, name or role`);
    if (typeof r.hash !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(r.hash)) throw bad(`token ${r.id} has no sha256 digest`);
    let vms: string[] | undefined;
    try {
      vms = r.vms === undefined ? undefined : checkVmPatterns(Array.isArray(r.vms) ? r.vms : [r.vms]);
    } catch (err) {
      throw bad(`token ${r.id}: ${(err as Error).message}`);
    }
    return {
      id: r.id,
      name: r.name,
      role: r.role,
      ...(vms && vms.length ? { vms } : {}),
      createdAt: typeof r.createdAt === 'string' ? r.createdAt : new Date(0).toISOString(),
      lastUsedAt: typeof r.lastUsedAt === 'string' ? r.lastUsedAt : null,
      hash: r.hash,
    };
  });
}

/** Temp file (0600) in the same directory, fsync, rename, fsync the directory. */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.fchmodSync(fd, 0o600);
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  try {
    const dfd = fs.openSync(path.dirname(file), 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    // Directory fsync is best effort (some filesystems refuse it).
  }
}
