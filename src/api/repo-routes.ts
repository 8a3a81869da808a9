/**
 * Repository and job routes of the HTTP API. Long operations (backup, restore, verify, gc) start a
 * job and answer 202 with it; clients poll GET /v1/jobs/ID. Quick ones (list, show, prune,
 * reindex) answer directly. Request bodies are validated by JSON schema (400 ERR_INVALID_ARGUMENT).
 * Paths in requests (backup sources, config files, restore targets) pass the daemon's path policy
 * (util/path-policy.ts) before anything is opened: 403 ERR_PATH_NOT_ALLOWED. Each route's
 * permission and the VMs it names are in its `config` (api/auth.ts).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { tokenSees } from './auth.js';
import { ReboundError } from '../errors.js';
import { backup, type BackupRequest } from '../repo/ingest.js';
import { restore, type RestoreRequest } from '../repo/restore.js';
import { gc } from '../repo/gc.js';
import { prune, type RetentionPolicy } from '../repo/prune.js';
import { verify } from '../repo/verify.js';
import type { Repository } from '../repo/repository.js';
import type { JobRegistry } from './jobs.js';
import { pointEntryName } from '../exports/catalog.js';
import { isNbdUri } from '../nbd/client.js';
import { checkNbdSocket } from '../repo/sources.js';
import type { PathPolicy } from '../util/path-policy.js';

export interface RepoRouteContext {
  repo: Repository;
  jobs: JobRegistry;
  /** Which paths requests may name (sourceDirs, targetDirs). */
  paths: PathPolicy;
  /** Called after the repository's set of restore points changed (exports follow). */
  repoChanged: () => Promise<void>;
}

const name = { type: 'string', minLength: 1, maxLength: 128 } as const;

/** The VM of a route's `:vm`, or of its body's `vm`. */
const vmParam = (req: FastifyRequest): string[] => [(req.params as { vm: string }).vm];
const vmBody = (req: FastifyRequest): string[] => {
  const vm = (req.body as { vm?: unknown } | undefined)?.vm;
  return typeof vm === 'string' ? [vm] : [];
};

/** The VM a job works on (its params name it), or 'all' (gc, a verify of everything). */
export function jobVms(jobs: JobRegistry, id: string): string[] | 'all' {
  let params: Record<string, unknown>;
  try {
    params = jobs.get(id).params;
  } catch {
    return []; // no such job: 404 for everyone
  }
  return typeof params.vm === 'string' ? [params.vm] : 'all';
}

export function registerRepoRoutes(app: FastifyInstance, ctx: RepoRouteContext): void {
  const { repo, jobs } = ctx;

  const read = { permission: 'read' } as const;
  const operate = { permission: 'operate' } as const;
  const admin = { permission: 'admin' } as const;

  app.get('/v1/repo', { config: read }, async () => repo.describe());

  app.post('/v1/repo/reindex', { config: admin }, async () => {
    const points = await repo.reindex();
    await ctx.repoChanged();
    return { points };
  });

  app.get('/v1/vms', { config: read }, async (req) => ({ vms: (await repo.vms()).filter((v) => tokenSees(req, v.vm)) }));

  app.get<{ Params: { vm: string } }>('/v1/vms/:vm/points', { config: { ...read, vms: vmParam } }, async (req) => {
    const points = await repo.points(req.params.vm);
    if (points.length === 0) throw new ReboundError('ERR_VM_NOT_FOUND', `no backups of VM '${req.params.vm}'`);
    return { vm: req.params.vm, points };
  });

  app.get<{ Params: { vm: string; point: string } }>('/v1/vms/:vm/points/:point', { config: { ...read, vms: vmParam } }, async (req) => {
    const m = await repo.point(req.params.vm, req.params.point);
    return {
      ...m,
      pinned: repo.isPinned(m.vm, m.id),
      exports: m.disks.map((d) => pointEntryName(m.vm, m.id, d.name)),
    };
  });

  app.post<{ Body: BackupRequest }>(
    '/v1/backups',
    {
      config: { ...operate, vms: vmBody },
      schema: {
        body: {
          type: 'object',
          required: ['vm', 'disks'],
          additionalProperties: false,
          properties: {
            vm: name,
            disks: {
              type: 'array',
              minItems: 1,
              items: { type: 'object', required: ['name', 'source'], additionalProperties: false, properties: { name, source: { type: 'string', minLength: 1 } } },
            },
            label: { type: 'string', enum: ['crash', 'fs', 'app'] },
            tags: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 64 } },
            configs: { type: 'array', items: { type: 'string', minLength: 1 } },
            dirtyBitmap: { type: 'string', minLength: 1 },
            concurrency: { type: 'integer', minimum: 1, maximum: 64 },
          },
        },
      },
    },
    async (req, reply) => {
      const paths = ctx.paths;
      for (const d of req.body.disks) {
        // The body schema makes every source a string; an open BackupSource is in-process only.
        const source = d.source as string;
        if (isNbdUri(source)) checkNbdSocket(source, paths.gate('source', `source of disk ${d.name}:`));
        else paths.checkSource(source, `source of disk ${d.name}:`);
      }
      for (const c of req.body.configs ?? []) paths.checkSource(c, 'config file');
      const job = jobs.start(
        'backup',
        { ...req.body },
        (signal, progress) => backup(repo, req.body, { signal, onProgress: (p) => progress({ ...p }), sourceGate: paths.gate('source', 'backup source') }),
        async (info) => {
          if (info.state === 'succeeded') await ctx.repoChanged();
        },
      );
      return reply.status(202).send(job);
    },
  );

  app.post<{ Body: RestoreRequest }>(
    '/v1/restores',
    {
      config: { ...operate, vms: vmBody },
      schema: {
        body: {
          type: 'object',
          required: ['vm', 'disk', 'to'],
          additionalProperties: false,
          properties: { vm: name, point: { type: 'string', minLength: 1 }, disk: name, to: { type: 'string', minLength: 1 }, concurrency: { type: 'integer', minimum: 1, maximum: 64 } },
        },
      },
    },
    async (req, reply) => {
      const targetGate = ctx.paths.gate('target', 'restore target');
      if (isNbdUri(req.body.to)) checkNbdSocket(req.body.to, targetGate);
      else ctx.paths.checkTarget(req.body.to, 'restore target');
      // Resolve now, so a bad VM/point/disk is a 404 rather than a failed job.
      const m = await repo.point(req.body.vm, req.body.point ?? 'latest');
      if (!m.disks.some((d) => d.name === req.body.disk)) {
        throw new ReboundError('ERR_DISK_NOT_FOUND', `restore point ${m.vm}@${m.id} has no disk '${req.body.disk}'`);
      }
      const job = jobs.start('restore', { ...req.body, point: m.id }, (signal, progress) =>
        restore(repo, { ...req.body, point: m.id }, { signal, onProgress: (p) => progress({ ...p }), targetGate }),
      );
      return reply.status(202).send(job);
    },
  );

  app.post<{ Body: { vm?: string; point?: string } }>(
    '/v1/verify',
    { config: { ...operate, vms: (req) => (vmBody(req).length ? vmBody(req) : 'all') }, schema: { body: { type: 'object', additionalProperties: false, properties: { vm: name, point: { type: 'string', minLength: 1 } } } } },
    async (req, reply) => {
      if (req.body?.point && !req.body.vm) throw new ReboundError('ERR_INVALID_ARGUMENT', 'a point needs its VM');
      if (req.body?.vm) await repo.point(req.body.vm, req.body.point ?? 'latest'); // 404 now, not a failed job
      const job = jobs.start('verify', { ...req.body }, (signal, progress) =>
        verify(repo, { ...req.body, signal, onProgress: (p) => progress({ ...p }) }),
      );
      return reply.status(202).send(job);
    },
  );

  const count = { type: 'integer', minimum: 0, maximum: 100000 } as const;
  app.post<{ Body: { vm: string; dryRun?: boolean } & RetentionPolicy }>(
    '/v1/prune',
    {
      config: { ...admin, vms: vmBody },
      schema: {
        body: {
          type: 'object',
          required: ['vm'],
          additionalProperties: false,
          properties: { vm: name, dryRun: { type: 'boolean' }, keepLast: count, keepDaily: count, keepWeekly: count, keepMonthly: count },
        },
      },
    },
    async (req) => {
      const { vm, dryRun, ...policy } = req.body;
      const result = await prune(repo, vm, policy, { dryRun: dryRun ?? false });
      if (!dryRun && result.removed.length) await ctx.repoChanged();
      return result;
    },
  );

  app.post<{ Body: { graceMs?: number } }>(
    '/v1/gc',
    { config: admin, schema: { body: { type: 'object', additionalProperties: false, properties: { graceMs: { type: 'integer', minimum: 0 } } } } },
    async (req, reply) => {
      const job = jobs.start('gc', { ...req.body }, (signal, progress) =>
        gc(repo, { graceMs: req.body?.graceMs, signal, onProgress: (p) => progress({ ...p }) }),
      );
      return reply.status(202).send(job);
    },
  );

  const ofJob = (req: FastifyRequest): string[] | 'all' => jobVms(jobs, (req.params as { id: string }).id);
  app.get('/v1/jobs', { config: read }, async (req) => ({
    jobs: jobs.list().filter((j) => !req.token?.vms?.length || (typeof j.params.vm === 'string' && tokenSees(req, j.params.vm))),
  }));
  app.get<{ Params: { id: string }; Querystring: { waitMs?: number } }>(
    '/v1/jobs/:id',
    {
      config: { ...read, vms: ofJob },
      schema: {
        querystring: {
          type: 'object',
          properties: { waitMs: { type: 'integer', minimum: 0, maximum: 30_000, description: 'answer when the job ends or after this many ms, whichever is first (default 0: at once)' } },
        },
      },
    },
    async (req) => jobs.wait(req.params.id, req.query.waitMs ?? 0),
  );
  app.delete<{ Params: { id: string } }>('/v1/jobs/:id', { config: { ...operate, vms: ofJob } }, async (req) => jobs.cancel(req.params.id));
}
