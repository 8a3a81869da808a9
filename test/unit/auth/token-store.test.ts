/** TokenStore: tokens shown once, stored hashed in a 0600 file, the first admin token, revocation. */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN_FILE, TOKENS_FILE, TokenStore, authDir, digest } from '../../../src/auth/token-store.js';
import { tempDir } from '../../helpers/images.js';

const dirs: string[] = [];
const newDir = (): string => {
  const d = tempDir('rebound-auth-');
  dirs.push(d);
  return authDir(d);
};
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const mode = (p: string): number => fs.statSync(p).mode & 0o777;

describe('TokenStore', () => {
  it('creates random rbd_ tokens, keeps only their sha256 digests, in a 0600 file of a 0700 directory', async () => {
    const dir = newDir();
    const store = await TokenStore.open(dir);
    const a = await store.create({ name: 'ci', role: 'operator', vms: ['web-*'] });
    const b = await store.create({ name: 'ci2', role: 'viewer' });
    expect(a.token).toMatch(/^rbd_[A-Za-z0-9_-]{43}$/);
    expect(a.token).not.toBe(b.token);
    expect(a.info).toMatchObject({ name: 'ci', role: 'operator', vms: ['web-*'], lastUsedAt: null });
    expect(a.info).not.toHaveProperty('hash');
    const text = fs.readFileSync(path.join(dir, TOKENS_FILE), 'utf8');
    expect(text).not.toContain(a.token);
    expect(text).toContain(digest(a.token).toString('hex'));
    expect(mode(path.join(dir, TOKENS_FILE))).toBe(0o600);
    expect(mode(dir)).toBe(0o700);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp'))).toEqual([]);
  });

  it('authenticates exactly the tokens it made, and remembers them across a reopen', async () => {
    const dir = newDir();
    const store = await TokenStore.open(dir);
    const { token, info } = await store.create({ name: 'x', role: 'admin' });
    expect(store.authenticate(token)?.id).toBe(info.id);
    expect(store.authenticate(token + 'x')).toBeUndefined();
    expect(store.authenticate(token.slice(0, -1))).toBeUndefined();
    expect(store.authenticate('')).toBeUndefined();
    await store.close();
    const again = await TokenStore.open(dir);
    expect(again.authenticate(token)).toMatchObject({ id: info.id, role: 'admin' });
    // lastUsedAt reached the file at close.
    expect(again.list()[0]!.lastUsedAt).not.toBeNull();
  });

  it('revokes at once and for good', async () => {
    const dir = newDir();
    const store = await TokenStore.open(dir);
    const { token, info } = await store.create({ name: 'x', role: 'viewer' });
    expect((await store.revoke(info.id)).id).toBe(info.id);
    expect(store.authenticate(token)).toBeUndefined();
    await expect(store.revoke(info.id)).rejects.toMatchObject({ code: 'ERR_TOKEN_NOT_FOUND' });
    expect((await TokenStore.open(dir)).authenticate(token)).toBeUndefined();
  });

  it('writes the first admin token to admin.token (0600) only when it has no token', async () => {
    const dir = newDir();
    const store = await TokenStore.open(dir);
    const file = await store.ensureAdminToken();
    expect(file).toBe(path.join(dir, ADMIN_TOKEN_FILE));
    expect(mode(file!)).toBe(0o600);
    const token = fs.readFileSync(file!, 'utf8').trim();
    expect(store.authenticate(token)?.role).toBe('admin');
    expect(await store.ensureAdminToken()).toBeUndefined();
    expect(await (await TokenStore.open(dir)).ensureAdminToken()).toBeUndefined();
    expect(fs.readFileSync(file!, 'utf8').trim()).toBe(token);
    // Revoking that token removes the file; another token's revocation does not.
    const other = await store.create({ name: 'o', role: 'viewer' });
    await store.revoke(other.info.id);
    expect(fs.existsSync(file!)).toBe(true);
    await store.revoke(store.authenticate(token)!.id);
    expect(fs.existsSync(file!)).toBe(false);
  });

  it('tightens a tokens.json someone made world-readable', async () => {
    const dir = newDir();
    await (await TokenStore.open(dir)).create({ name: 'x', role: 'viewer' });
    fs.chmodSync(path.join(dir, TOKENS_FILE), 0o644);
    await TokenStore.open(dir);
    expect(mode(path.join(dir, TOKENS_FILE))).toBe(0o600);
  });

  it('refuses a damaged tokens.json instead of starting without tokens', async () => {
    for (const text of ['{', 'null', '{"version":1,"tokens":[{"id":"a","name":"n","role":"root","hash":"sha256:00"}]}', '{"version":2,"tokens":[]}']) {
      const dir = newDir();
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, TOKENS_FILE), text);
      await expect(TokenStore.open(dir), text).rejects.toMatchObject({ code: 'ERR_DATA_DIR_UNUSABLE' });
    }
  });

  it('validates names, roles and VM patterns', async () => {
    const store = TokenStore.inMemory();
    await expect(store.create({ name: '', role: 'viewer' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(store.create({ name: 'x'.repeat(65), role: 'viewer' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(store.create({ name: 'a\nb', role: 'viewer' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(store.create({ name: 'x', role: 'root' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(store.create({ name: 'x', role: 'viewer', vms: ['../etc'] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(store.create({ name: 'x', role: 'viewer', vms: ['a(b'] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    expect(store.size).toBe(0);
  });
});
