/**
 * API tokens for tests that build the API in-process (createApi + inject): an in-memory token
 * store with one token per role, and the header to send.
 */
import type { ApiAuth } from '../../src/api/auth.js';
import { TokenStore } from '../../src/auth/token-store.js';
import type { Role } from '../../src/auth/permissions.js';

export interface TestAuth {
  auth: ApiAuth;
  tokens: TokenStore;
  /** A token of each role. */
  token: Record<Role, string>;
  /** `{authorization: 'Bearer ...'}` for a role (default admin). */
  headers: (role?: Role) => Record<string, string>;
}

export async function testAuth(auth: Partial<ApiAuth> = {}): Promise<TestAuth> {
  const tokens = auth.tokens ?? TokenStore.inMemory();
  const token = {} as Record<Role, string>;
  for (const role of ['viewer', 'operator', 'admin'] as const) token[role] = (await tokens.create({ name: `test ${role}`, role })).token;
  return { auth: { ...auth, tokens }, tokens, token, headers: (role = 'admin') => ({ authorization: `Bearer ${token[role]}` }) };
}
