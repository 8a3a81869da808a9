/**
 * The daemon's HTTP control plane (JSON). Every `rebound` command other than `serve` is a client
 * of these routes. Routes are versioned under /v1; errors always have the shape
 * `{error: {code, message}}` (api/error-map.ts).
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { ReboundError } from '../errors.js';
import type { Catalog, CatalogEntry } from '../exports/catalog.js';
import type { Logger } from '../util/log.js';
import { EventLoopDelayMonitor } from '../util/event-loop.js';
import { nbdUris } from '../nbd/client.js';
import { toApiError } from './error-map.js';
import { registerRepoRoutes, type RepoRouteContext } from './repo-routes.js';
import { registerFuseRoutes, type FuseRouteContext } from './fuse-routes.js';
import { registerSessionRoutes, type SessionRouteContext } from './session-routes.js';

export interface ApiContext extends Partial<RepoRouteContext> {
  /** Every published disk (`/v1/exports`). */
  catalog: Catalog;
  log: Logger;
  version: string;
  startedAt: Date;
  /** Where the daemon listens, for clients building URIs. */
  endpoints: () => { nbd: string[]; nbdSocket: string[]; http: string | undefined };
  /** The effective configuration (`rebound config`). */
  config: () => Record<string, unknown>;
  /** FUSE mounts (`/v1/mounts`); absent when the daemon has no repository. */
  fuse?: FuseRouteContext['fuse'];
  /** Recovery sessions (`/v1/sessions`); absent when the daemon has no repository. */
  sessions?: SessionRouteContext['sessions'];
}

export function createApi(ctx: ApiContext): FastifyInstance {
  const app = Fastify({ logger: false });

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
  app.get<{ Querystring: { reset?: string } }>('/v1/health', async (req) => ({
    status: 'ok',
    version: ctx.version,
    pid: process.pid,
    startedAt: ctx.startedAt.toISOString(),
    uptimeSeconds: Math.round((Date.now() - ctx.startedAt.getTime()) / 1000),
    endpoints: ctx.endpoints(),
    exports: ctx.catalog.entries().length,
    eventLoopDelay: eventLoop.report({ reset: req.query.reset === '1' || req.query.reset === 'true' }),
  }));

  // Every published disk, under each name a client may use (`VM@latest/DISK` rows carry `aliasOf`);
  // NBD URIs for the disks published on NBD.
  const row = (name: string, e: CatalogEntry): Record<string, unknown> => ({
    ...e.toJSON(),
    name,
    ...(name !== e.name ? { aliasOf: e.name } : {}),
    uris: e.publishedOn.has('nbd') ? nbdUris(name, ctx.endpoints()) : [],
  });
  app.get('/v1/exports', async () => {
    const nbd = ctx.catalog.view('nbd');
    const rows = nbd.names().map(({ name, entry }) => row(name, entry));
    for (const e of ctx.catalog.entries()) if (!e.publishedOn.has('nbd')) rows.push(row(e.name, e));
    return { defaultExport: ctx.catalog.defaultName ?? null, exports: rows };
  });

  app.get<{ Params: { name: string } }>('/v1/exports/:name', async (req) => {
    const e = req.params.name === '' ? undefined : ctx.catalog.resolve(req.params.name);
    if (!e) throw new ReboundError('ERR_EXPORT_NOT_FOUND', `no export named '${req.params.name}'`);
    return { ...row(req.params.name, e), stack: await e.stack() };
  });

  app.get('/v1/config', async () => ctx.config());

  if (ctx.repo && ctx.jobs && ctx.repoChanged) registerRepoRoutes(app, { repo: ctx.repo, jobs: ctx.jobs, repoChanged: ctx.repoChanged });
  if (ctx.fuse) registerFuseRoutes(app, { fuse: ctx.fuse });
  if (ctx.sessions && ctx.jobs && ctx.repoChanged) {
    registerSessionRoutes(app, { sessions: ctx.sessions, jobs: ctx.jobs, endpoints: ctx.endpoints, repoChanged: ctx.repoChanged });
  }

  return app;
}
