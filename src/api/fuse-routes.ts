/**
 * FUSE mount routes of the HTTP API: the daemon mounts its read-only file tree (restore points,
 * partitions, config files, sessions) at directories of its host.
 *   GET    /v1/mounts                 every mount with its counters
 *   POST   /v1/mounts {dir}           mount at DIR (absolute; created if missing; must be empty);
 *                                     201, or 200 when this daemon already serves DIR
 *   DELETE /v1/mounts?dir=DIR[&lazy=true]   unmount; ERR_MOUNT_FAILED (with the reason) when busy,
 *                                     ERR_MOUNT_NOT_FOUND when this daemon has no mount there
 */
import type { FastifyInstance } from 'fastify';
import type { FuseMounts } from '../fuse/manager.js';

export interface FuseRouteContext {
  fuse: FuseMounts;
}

export function registerFuseRoutes(app: FastifyInstance, ctx: FuseRouteContext): void {
  const { fuse } = ctx;

  // The file tree shows every VM: a token limited to some VMs may list mounts but not make them.
  app.get('/v1/mounts', { config: { permission: 'read' } }, async () => ({ mounts: fuse.list() }));

  app.post<{ Body: { dir: string } }>(
    '/v1/mounts',
    {
      config: { permission: 'operate' },
      schema: {
        body: { type: 'object', required: ['dir'], additionalProperties: false, properties: { dir: { type: 'string', minLength: 1, maxLength: 4000 } } },
      },
    },
    async (req, reply) => {
      const existed = fuse.list().some((m) => m.dir === req.body.dir);
      const info = await fuse.mount(req.body.dir);
      return reply.status(existed ? 200 : 201).send(info);
    },
  );

  app.delete<{ Querystring: { dir: string; lazy?: boolean } }>(
    '/v1/mounts',
    {
      config: { permission: 'operate' },
      schema: {
        querystring: {
          type: 'object',
          required: ['dir'],
          additionalProperties: false,
          properties: { dir: { type: 'string', minLength: 1, maxLength: 4000 }, lazy: { type: 'boolean' } },
        },
      },
    },
    async (req) => {
      await fuse.unmount(req.query.dir, { lazy: req.query.lazy ?? false });
      return { dir: req.query.dir, unmounted: true };
    },
  );
}
