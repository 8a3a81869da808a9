/**
 * Authentication and authorisation of the HTTP API, in one place: every route declares its
 * permission in its options (`config: {permission: 'read'}`, see auth/permissions.ts for the
 * table); registering a route without one throws, so no route is open by omission.
 *
 *  - onRequest: the route's permission; `open` needs nothing. Otherwise `Authorization: Bearer
 *    TOKEN` must name a token of the store (401 ERR_UNAUTHENTICATED, with WWW-Authenticate) whose
 *    role has the permission (403 ERR_FORBIDDEN). Bad tokens are counted per client address:
 *    past the limit they get 429 ERR_TOO_MANY_REQUESTS with Retry-After instead of 401, and are
 *    logged at a bounded rate (auth/login-limiter.ts). A valid token is never refused by the
 *    limit, so whoever floods an address (a local user on loopback) cannot lock out the operators
 *    behind it; guessing is hopeless anyway (256-bit tokens), the limit bounds work and log.
 *  - preHandler (after the body is parsed): a token limited to VM patterns may only name matching
 *    VMs. A route says which VMs a request names with `config.vms(req)`: a list (sessions and jobs
 *    resolve to their VM; a name that does not exist gives [], and the route answers 404 as for
 *    anyone), or 'all' for a request about every VM. A route without `vms` is about no one VM:
 *    reading it is fine, acting through it (gc, global QoS, mounts, tokens) is refused.
 *
 * The token of a request is `req.token` for the routes (lists filter by it).
 */
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import { ReboundError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { ROLES, isPermission, leastRoleFor, roleAllows, vmAllowed, type Permission } from '../auth/permissions.js';
import type { TokenInfo, TokenStore } from '../auth/token-store.js';
import { LoginLimiter } from '../auth/login-limiter.js';
import { LogLimiter } from '../util/log-limiter.js';

export type VmsOf = (req: FastifyRequest) => string[] | 'all' | Promise<string[] | 'all'>;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route (auth/permissions.ts). Required. */
    permission?: Permission;
    /** The VMs a request names, for tokens limited to VM patterns (see api/auth.ts). */
    vms?: VmsOf;
  }
  interface FastifyRequest {
    /** The authenticated token (undefined on open routes). */
    token: TokenInfo | undefined;
  }
}

export interface ApiAuth {
  tokens: TokenStore;
  /** Failed logins per client address (default: 10 a minute). */
  limiter?: LoginLimiter;
  /** Log lines of failed logins, per client address (default: util/log-limiter.ts, 10 a minute). */
  logLimiter?: LogLimiter;
}

/** A route as registered, for the permission table and its test. */
export interface RouteEntry {
  method: string;
  url: string;
  permission: Permission | undefined;
  scoped: boolean;
}

const ROUTES = new WeakMap<FastifyInstance, RouteEntry[]>();

/** The routes registered on an API (HEAD twins of GET routes left out). */
export function registeredRoutes(app: FastifyInstance): RouteEntry[] {
  return ROUTES.get(app) ?? [];
}

const TOKEN_HINT =
  'send Authorization: Bearer TOKEN (the CLI: --token-file FILE or REBOUND_TOKEN; on the gateway, the first admin token is DATA/auth/admin.token)';

/** Installs the hooks; call before registering routes. */
export function installAuth(app: FastifyInstance, auth: ApiAuth, log: Logger): void {
  const limiter = auth.limiter ?? new LoginLimiter();
  const logLimiter = auth.logLimiter ?? new LogLimiter();
  const routes: RouteEntry[] = [];
  ROUTES.set(app, routes);
  app.decorateRequest('token', undefined);

  app.addHook('onRoute', (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const permission = route.config?.permission;
    if (!isPermission(permission)) {
      throw new TypeError(`API route ${methods.join(',')} ${route.url} declares no permission (config.permission: open, read, operate or admin)`);
    }
    for (const m of methods) {
      if (m === 'HEAD' && routes.some((r) => r.method === 'GET' && r.url === route.url)) continue;
      routes.push({ method: m, url: route.url, permission, scoped: typeof route.config?.vms === 'function' });
    }
  });

  app.addHook('onRequest', async (req, reply) => {
    // No route matched: the not-found handler answers 404, which tells nothing.
    if (req.routeOptions.url === undefined) return;
    const permission = req.routeOptions.config.permission;
    if (permission === 'open') return;
    if (!isPermission(permission)) throw new ReboundError('ERR_INTERNAL', `route ${req.routeOptions.url} declares no permission`);
    const header = req.headers.authorization;
    if (header === undefined || header === '') {
      void reply.header('www-authenticate', 'Bearer realm="rebound"');
      throw new ReboundError('ERR_UNAUTHENTICATED', `${req.method} ${req.routeOptions.url} needs an API token: ${TOKEN_HINT}`);
    }
    const m = /^Bearer +([\x21-\x7e]{1,512}) *$/i.exec(header);
    const token = m ? auth.tokens.authenticate(m[1]!) : undefined;
    if (!token) {
      const address = req.ip;
      const wait = limiter.blockedFor(address);
      if (wait > 0) {
        void reply.header('retry-after', String(Math.ceil(wait / 1000)));
        throw new ReboundError('ERR_TOO_MANY_REQUESTS', `too many requests with bad API tokens from ${address}; try again in ${Math.ceil(wait / 1000)} s`);
      }
      const failures = limiter.fail(address);
      logLimiter.warn(log, 'api-bad-token', address, 'API request with a bad token refused', { client: address, route: `${req.method} ${req.routeOptions.url}`, failures });
      void reply.header('www-authenticate', 'Bearer realm="rebound", error="invalid_token"');
      throw new ReboundError('ERR_UNAUTHENTICATED', `the API token is not valid (revoked, mistyped or of another daemon): ${TOKEN_HINT}`);
    }
    if (!roleAllows(token.role, permission)) {
      throw new ReboundError(
        'ERR_FORBIDDEN',
        `token '${token.name}' (role ${token.role}) may not ${req.method} ${req.routeOptions.url}: it needs the ${permission} permission (role ${leastRoleFor(permission)} or above)`,
      );
    }
    req.token = token;
  });

  app.addHook('preHandler', async (req) => {
    const token = req.token;
    if (!token?.vms?.length) return;
    const config = req.routeOptions.config;
    const named = config.vms ? await config.vms(req) : 'all';
    const limited = `token '${token.name}' is limited to VMs ${token.vms.join(', ')}`;
    if (named === 'all') {
      if (config.permission === 'read' && !config.vms) return;
      throw new ReboundError('ERR_FORBIDDEN', `${limited}; ${req.method} ${req.routeOptions.url} acts on every VM`);
    }
    const outside = named.filter((vm) => !vmAllowed(token.vms, vm));
    if (outside.length) throw new ReboundError('ERR_FORBIDDEN', `${limited}; this request names VM ${outside.join(', ')}`);
  });
}

/** Whether the request's token may see `vm` (for filtering lists). */
export function tokenSees(req: FastifyRequest, vm: string): boolean {
  return vmAllowed(req.token?.vms, vm);
}

/** The route table as Markdown (docs/api-permissions.md is this rendering, kept by a test). */
export function renderRouteTable(routes: readonly RouteEntry[]): string {
  const rows = [...routes].sort((a, b) => a.url.localeCompare(b.url) || a.method.localeCompare(b.method));
  const who = (p: Permission | undefined): string => (p === 'open' ? 'anyone, no token' : p ? ROLES.filter((r) => roleAllows(r, p)).join(', ') : '?');
  const lines = [
    '# API routes and their permissions',
    '',
    '<!-- Generated from the routes as registered (test/unit/api/auth.test.ts; after a change: npx vitest run test/unit/api/auth.test.ts -u). -->',
    '',
    'Roles: `viewer` has `read`; `operator` has `read` and `operate`; `admin` has all three ([security.md](security.md#tokens-and-roles)).',
    '"VM-scoped": the request names a VM (or a session or job of one), so a token limited to VM patterns may use it for matching VMs;',
    'other `operate`/`admin` routes act on every VM and are refused to such tokens.',
    '',
    '| method | route | permission | roles | VM-scoped |',
    '|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.method} | \`${r.url}\` | ${r.permission ?? '?'} | ${who(r.permission)} | ${r.scoped ? 'yes' : ''} |`),
    '',
  ];
  return lines.join('\n');
}
