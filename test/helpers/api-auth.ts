/**
 * API tokens for tests: `testAuth` for an API built in-process (createApi + inject: an in-memory
 * token store with one token per role); `daemonApi` for a running Daemon (its admin token from the
 * data directory, a viewer and an operator token made with it, and fetch with a role's token).
 */
import type { ApiAuth } from '../../src/api/auth.js';
import fs from 'node:fs';
import { adminTokenPath, TokenStore } from '../../src/auth/token-store.js';
import type { Daemon } from '../../src/daemon/daemon.js';
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

export interface DaemonApi {
  /** A token of each role. */
  token: Record<Role, string>;
  /** One request with a role's token (default admin); the answer's status and JSON body. */
  api(method: string, url: string, body?: unknown, role?: Role): Promise<{ status: number; body: any }>;
  /** Polls a job until it is neither queued nor running; its last state. */
  waitJob(id: string): Promise<any>;
}

export async function daemonApi(daemon: Daemon): Promise<DaemonApi> {
  const token = {} as Record<Role, string>;
  const api: DaemonApi['api'] = async (method, url, body, role = 'admin') => {
    const res = await fetch(`http://${daemon.endpoints.http}${url}`, {
      method,
      headers: { authorization: `Bearer ${token[role]}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  };
  token.admin = fs.readFileSync(adminTokenPath(daemon.config.dataDir), 'utf8').trim();
  for (const role of ['viewer', 'operator'] as const) token[role] = (await api('POST', '/v1/tokens', { name: role, role })).body.token;
  const waitJob = async (id: string): Promise<any> => {
    for (;;) {
      const { body } = await api('GET', `/v1/jobs/${id}`);
      if (body.state !== 'running' && body.state !== 'queued') return body;
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { token, api, waitJob };
}
