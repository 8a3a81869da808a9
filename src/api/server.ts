/**
 * The daemon's HTTP control plane (JSON). Every `rebound` command other than `serve` is a client
 * of these routes. Routes are versioned under /v1; errors always have the shape
 * `{error: {code, message}}` (api/error-map.ts).
 *
 * Request hygiene (the daemon runs as root; a web page in an operator's browser must not be able
 * to drive it): every request's Host must be a name the daemon answers to (loopback names, the
 * configured and bound listen hosts, the names of the `httpHostNames` setting, and for a wildcard
 * listener this machine's hostname and interface addresses) or it is 421 ERR_HOST_NOT_ALLOWED (DNS
 * rebinding); a write request
 * (POST/PUT/PATCH/DELETE) with a Content-Type other than application/json is 415
 * ERR_UNSUPPORTED_MEDIA_TYPE (no "simple" cross-site form or text/plain request reaches a route),
 * and one whose Origin is not the API's own is 403 ERR_ORIGIN_NOT_ALLOWED. A body-less write
 * without Content-Type is fine (the CLI sends none). Bodies are limited to BODY_LIMIT.
 *
 * Then authentication (api/auth.ts): every route declares its permission (`config.permission`),
 * and every request but GET /v1/health needs a bearer token whose role has it. With `tls` the
 * API speaks HTTPS only.
 */
import os from 'node:os';
import Fastify, { type FastifyReply, type FastifyInstance, type FastifyRequest } from 'fastify';
import { ReboundError } from '../errors.js';
import type { Catalog, CatalogEntry } from '../exports/catalog.js';
import type { Logger } from '../util/log.js';
import { EventLoopDelayMonitor } from '../util/event-loop.js';
import { nbdUris, type NbdTlsMode } from '../nbd/client.js';
import { toApiError } from './error-map.js';
import { registerRepoRoutes, type RepoRouteContext } from './repo-routes.js';
import { PathPolicy } from '../util/path-policy.js';
import { registerFuseRoutes, type FuseRouteContext } from './fuse-routes.js';
import { registerSessionRoutes, type SessionRouteContext } from './session-routes.js';
import { installAuth, tokenSees, type ApiAuth } from './auth.js';
import { registerTokenRoutes } from './token-routes.js';
import { registerVerifyRoutes, type VerifyRouteContext } from './verify-routes.js';
import { installOpenApi } from './openapi.js';
import { registerMetricsRoutes } from './metrics-routes.js';
import type { Metrics } from '../metrics/metrics.js';
import { registerEventRoutes } from './events-routes.js';
import { DaemonEvents } from '../events/daemon-events.js';
import { registerDashboardRoutes } from './dashboard-routes.js';

export interface ApiContext extends Partial<RepoRouteContext> {
  /** Every published disk (`/v1/exports`). */
  catalog: Catalog;
  log: Logger;
  version: string;
  startedAt: Date;
  /** Where the daemon listens, for clients building URIs. */
  endpoints: () => { nbd: string[]; nbdSocket: string[]; http: string | undefined; iscsi?: string[]; nbdTls?: NbdTlsMode };
  /** The effective configuration (`rebound config`). */
  config: () => Record<string, unknown>;
  /** FUSE mounts (`/v1/mounts`); absent when the daemon has no repository. */
  fuse?: FuseRouteContext['fuse'];
  /** Recovery sessions (`/v1/sessions`); absent when the daemon has no repository. */
  sessions?: SessionRouteContext['sessions'];
  /** Live events (GET /v1/events); default: fed from this context's catalog, sessions and jobs. */
  events?: DaemonEvents;
  /** The built dashboard served at / (default: dist/dashboard of this checkout). */
  dashboardDir?: string;
  /** API tokens and the failed-login limits (api/auth.ts). */
  auth: ApiAuth;
  /** Prometheus metrics (`GET /metrics`, metrics/metrics.ts). */
  metrics?: Metrics;
  /** Serve HTTPS with this certificate and key (tls/cert-dir.ts). */
  tls?: { cert: Buffer; key: Buffer; ca?: Buffer };
  /** Verification boots (`/v1/boot-verifications`); absent when the daemon has no repository. */
  verify?: Omit<VerifyRouteContext, 'repo'>;
}

/** Largest request body, bytes: every body is a small JSON object. */
export const BODY_LIMIT = 1024 * 1024;

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];
const WILDCARD_HOSTS = new Set(['', '0.0.0.0', '::', '*']);

export function createApi(ctx: ApiContext): FastifyInstance {
  const app = Fastify({
    ...(ctx.tls ? { https: { cert: ctx.tls.cert, key: ctx.tls.key } } : {}),
    logger: false,
    bodyLimit: BODY_LIMIT,
    // Errors of the router itself (a malformed percent-encoding in the URL) get the API's error
    // shape too, not fastify's own body.
    frameworkErrors: (err, _req, reply) => {
      const { status, body } = toApiError(new ReboundError('ERR_INVALID_ARGUMENT', `malformed request: ${err.message}`, { cause: err }));
      void (reply as FastifyReply).status(status).send(body);
    },
  });
  const hostAllowed = allowedHosts(ctx);
  app.addHook('onRequest', async (req) => checkRequest(req, hostAllowed, Boolean(ctx.tls)));
  installAuth(app, ctx.auth, ctx.log);
  installOpenApi(app, { version: ctx.version }); // before the routes: it follows them as they register

  app.setErrorHandler((err, req, reply) => {
    const { status, body } = toApiError(err);
    if (status >= 500) ctx.log.error('API request failed', { method: req.method, url: req.url, err: body.error.message });
    void reply.status(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    const { status, body } = toApiError(new ReboundError('ERR_NOT_FOUND', `no route ${req.method} ${req.url}`));
    void reply.status(status).send(body);
  });

  const eventLoop = new EventLoopDelayMonitor().start();
  app.addHook('onClose', async () => eventLoop.stop());

  // `eventLoopDelay` (util/event-loop.ts): p50/p99/max/mean ms since start and since the last
  // reset; `?reset=1` starts a new window after answering, so two calls bracket an interval.
  app.get<{ Querystring: { reset?: string } }>(
    '/v1/health',
    {
      config: { permission: 'open' },
      schema: { querystring: { type: 'object', properties: { reset: { type: 'string', description: "'1' or 'true': start a new event-loop delay window after answering" } } } },
    },
    async (req) => ({
      status: 'ok',
      version: ctx.version,
      pid: process.pid,
      startedAt: ctx.startedAt.toISOString(),
      uptimeSeconds: Math.round((Date.now() - ctx.startedAt.getTime()) / 1000),
      endpoints: ctx.endpoints(),
      exports: ctx.catalog.entries().length,
      eventLoopDelay: eventLoop.report({ reset: req.query.reset === '1' || req.query.reset === 'true' }),
    }),
  );

  // Every published disk, under each name a client may use (`VM@latest/DISK` rows carry `aliasOf`);
  // NBD URIs for the disks published on NBD.
  const row = (name: string, e: CatalogEntry): Record<string, unknown> => ({
    ...e.toJSON(),
    name,
    ...(name !== e.name ? { aliasOf: e.name } : {}),
    uris: e.publishedOn.has('nbd') ? nbdUris(name, ctx.endpoints()) : [],
  });
  // A token limited to VM patterns sees the disks of its VMs' restore points and sessions only.
  const entryVm = (e: CatalogEntry): string | undefined => e.point?.vm ?? e.session?.vm;
  const visible = (req: FastifyRequest, e: CatalogEntry): boolean => {
    if (!req.token?.vms?.length) return true;
    const vm = entryVm(e);
    return vm !== undefined && tokenSees(req, vm);
  };
  app.get('/v1/exports', { config: { permission: 'read' } }, async (req) => {
    const nbd = ctx.catalog.view('nbd');
    const rows = nbd.names().filter(({ entry }) => visible(req, entry)).map(({ name, entry }) => row(name, entry));
    for (const e of ctx.catalog.entries()) if (!e.publishedOn.has('nbd') && visible(req, e)) rows.push(row(e.name, e));
    return { defaultExport: ctx.catalog.defaultName ?? null, exports: rows };
  });

  const exportVms = (req: FastifyRequest): string[] | 'all' => {
    const name = (req.params as { name: string }).name;
    const e = name === '' ? undefined : ctx.catalog.resolve(name);
    if (!e) return [];
    const vm = entryVm(e);
    return vm === undefined ? 'all' : [vm];
  };
  app.get<{ Params: { name: string } }>('/v1/exports/:name', { config: { permission: 'read', vms: exportVms } }, async (req) => {
    const e = req.params.name === '' ? undefined : ctx.catalog.resolve(req.params.name);
    if (!e) throw new ReboundError('ERR_EXPORT_NOT_FOUND', `no export named '${req.params.name}'`);
    return { ...row(req.params.name, e), stack: await e.stack() };
  });

  // The configuration names the daemon's paths and policy: admins only.
  app.get('/v1/config', { config: { permission: 'admin' } }, async () => ctx.config());

  registerTokenRoutes(app, { tokens: ctx.auth.tokens });
  if (ctx.metrics) registerMetricsRoutes(app, { metrics: ctx.metrics });

  // Paths in requests are policy: without one given, no path is allowed.
  const paths = ctx.paths ?? PathPolicy.none();
  if (ctx.repo && ctx.jobs && ctx.repoChanged) registerRepoRoutes(app, { repo: ctx.repo, jobs: ctx.jobs, repoChanged: ctx.repoChanged, paths });
  if (ctx.fuse) registerFuseRoutes(app, { fuse: ctx.fuse });
  if (ctx.repo && ctx.verify) registerVerifyRoutes(app, { repo: ctx.repo, ...ctx.verify });
  if (ctx.sessions && ctx.jobs && ctx.repoChanged) {
    registerSessionRoutes(app, { sessions: ctx.sessions, jobs: ctx.jobs, endpoints: ctx.endpoints, repoChanged: ctx.repoChanged, paths });
  }

  // Live events for the dashboard (api/events-routes.ts), sampled only while someone listens.
  const sessions = ctx.sessions;
  const jobs = ctx.jobs;
  const events =
    ctx.events ??
    new DaemonEvents({ catalog: ctx.catalog, sessions: sessions ? () => sessions.report() : undefined, jobs: jobs ? () => jobs.list() : undefined, io: ctx.metrics?.io });
  if (!ctx.events) app.addHook('onClose', async () => events.close());
  registerEventRoutes(app, { events, log: ctx.log });
  registerDashboardRoutes(app, ctx.dashboardDir !== undefined ? { dir: ctx.dashboardDir } : {});

  return app;
}

/** The host part of a Host header or listen address, lower case, without port, brackets or a trailing dot. */
export function hostName(hostPort: string): string {
  const t = hostPort.trim().toLowerCase();
  const v6 = /^\[([^\]]*)\](?::\d*)?$/.exec(t);
  const host = v6 ? v6[1]! : t.split(':').length === 2 ? t.slice(0, t.lastIndexOf(':')) : t;
  return host.replace(/\.$/, '');
}

/** A predicate over Host names; the listen addresses are read per call (they are known only after listen). */
function allowedHosts(ctx: ApiContext): (host: string) => boolean {
  let key: string | undefined;
  let names = new Set<string>();
  return (host) => {
    const config = ctx.config();
    const configured = config.http;
    const extra = Array.isArray(config.httpHostNames) ? (config.httpHostNames as string[]) : [];
    const listen = [typeof configured === 'string' && configured !== 'off' ? configured : '', ctx.endpoints().http ?? ''];
    const k = [...listen, ...extra].join('|');
    if (k !== key) {
      key = k;
      names = new Set([...LOOPBACK_NAMES, ...extra.map(hostName)]);
      const hosts = listen.filter(Boolean).map((a) => (/^\d+$/.test(a.trim()) ? '127.0.0.1' : hostName(a)));
      for (const h of hosts) names.add(h);
      if (hosts.some((h) => WILDCARD_HOSTS.has(h))) {
        names.add(os.hostname().toLowerCase());
        for (const addrs of Object.values(os.networkInterfaces())) for (const a of addrs ?? []) names.add(a.address.toLowerCase().replace(/%.*$/, ''));
      }
    }
    return names.has(host);
  };
}

function checkRequest(req: FastifyRequest, hostAllowed: (host: string) => boolean, https: boolean): void {
  const host = req.headers.host;
  if (host !== undefined && !hostAllowed(hostName(host))) {
    throw new ReboundError('ERR_HOST_NOT_ALLOWED', `this daemon does not answer to the host name '${host}'; use the address it listens on`);
  }
  if (!WRITE_METHODS.has(req.method)) return;
  const type = req.headers['content-type'];
  if (type !== undefined && type.split(';')[0]!.trim().toLowerCase() !== 'application/json') {
    throw new ReboundError('ERR_UNSUPPORTED_MEDIA_TYPE', `${req.method} requests take a JSON body (Content-Type: application/json), not '${type}'`);
  }
  const origin = req.headers.origin;
  if (origin !== undefined && !sameOrigin(origin, host, https)) {
    throw new ReboundError('ERR_ORIGIN_NOT_ALLOWED', `cross-origin ${req.method} requests are refused (Origin ${origin})`);
  }
}

function sameOrigin(origin: string, host: string | undefined, https: boolean): boolean {
  if (host === undefined) return false;
  try {
    const o = new URL(origin);
    const scheme = https ? 'https:' : 'http:';
    return o.protocol === scheme && o.host === new URL(`${scheme}//${host}`).host;
  } catch {
    return false;
  }
}
