/**
 * Verification-boot routes of the HTTP API (docs/verification.md): start a boot of a restore
 * point (a `boot-verify` job, 202), and the stored results per point and per VM, with the kept
 * screenshots. Starting needs the operate permission; a probe script needs admin (the daemon runs
 * it) and must lie in verifyScriptDirs (the path policy's rules; a client cannot name a file of
 * its own).
 */
import fs from 'node:fs';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ReboundError } from '../errors.js';
import { roleAllows } from '../auth/permissions.js';
import type { Repository } from '../repo/repository.js';
import { PathPolicy } from '../util/path-policy.js';
import type { BootVerifyRequest } from '../verify/boot-run.js';
import { listResults, latestResults, screenshotPath } from '../verify/result.js';
import type { Verifier } from '../verify/verifier.js';
import { checkRegex } from '../verify/checks.js';

export interface VerifyRouteContext {
  repo: Repository;
  verifier: Verifier;
  dataDir: string;
  /** Directories probe scripts may come from (verifyScriptDirs). */
  scriptDirs: readonly string[];
}

type StartBody = BootVerifyRequest & { vm: string; point?: string };
const vmParam = (req: FastifyRequest): string[] => [(req.params as { vm: string }).vm];

export function registerVerifyRoutes(app: FastifyInstance, ctx: VerifyRouteContext): void {
  const scripts = new PathPolicy({ sourceDirs: ctx.scriptDirs, targetDirs: [] });

  app.post<{ Body: StartBody }>(
    '/v1/boot-verifications',
    {
      config: { permission: 'operate', vms: (req) => [(req.body as StartBody).vm] },
      schema: {
        body: {
          type: 'object',
          required: ['vm'],
          additionalProperties: false,
          properties: {
            vm: { type: 'string', minLength: 1, maxLength: 128 },
            point: { type: 'string', minLength: 1 },
            timeoutSeconds: { type: 'integer', minimum: 1, maximum: 86400 },
            memory: { type: 'integer', minimum: 16 * 1048576, maximum: 1024 ** 4 },
            expectSerial: { type: 'string', minLength: 1, maxLength: 1024 },
            tcp: { type: 'array', maxItems: 16, items: { type: 'integer', minimum: 1, maximum: 65535 } },
            tcpGraceSeconds: { type: 'integer', minimum: 1, maximum: 86400 },
            script: { type: 'string', minLength: 1 },
            agent: { type: 'boolean' },
            screen: { type: 'boolean' },
            keepScreenshot: { type: 'boolean' },
          },
        },
      },
    },
    async (req, reply) => {
      const { vm, point, ...opts } = req.body;
      if (opts.expectSerial) checkRegex(opts.expectSerial);
      if (opts.script) {
        if (!req.token || !roleAllows(req.token.role, 'admin')) {
          throw new ReboundError('ERR_FORBIDDEN', 'a probe script runs on the gateway as the daemon: only an admin token may name one');
        }
        try {
          opts.script = scripts.checkSource(opts.script, 'probe script');
        } catch (err) {
          throw new ReboundError('ERR_PATH_NOT_ALLOWED', `probe script ${opts.script} is not in a directory of verifyScriptDirs (--verify-script-dir)`, { cause: err });
        }
        const st = await fs.promises.stat(opts.script).catch(() => undefined);
        if (!st?.isFile() || !(st.mode & 0o111)) throw new ReboundError('ERR_INVALID_ARGUMENT', `probe script ${opts.script} is not an executable file`);
      }
      const m = await ctx.repo.point(vm, point ?? 'latest'); // 404 now, not a failed job
      return reply.status(202).send(ctx.verifier.start(m, opts));
    },
  );

  app.get<{ Params: { vm: string } }>('/v1/vms/:vm/boot-verifications', { config: { permission: 'read', vms: vmParam } }, async (req) => ({
    vm: req.params.vm,
    latest: await latestResults(ctx.dataDir, req.params.vm),
  }));

  app.get<{ Params: { vm: string; point: string } }>('/v1/vms/:vm/points/:point/boot-verifications', { config: { permission: 'read', vms: vmParam } }, async (req) => {
    const m = await ctx.repo.point(req.params.vm, req.params.point);
    return { vm: m.vm, point: m.id, results: await listResults(ctx.dataDir, m.vm, m.id) };
  });

  app.get<{ Params: { vm: string; point: string; id: string } }>(
    '/v1/vms/:vm/points/:point/boot-verifications/:id/screenshot',
    { config: { permission: 'read', vms: vmParam } },
    async (req, reply) => {
      const m = await ctx.repo.point(req.params.vm, req.params.point);
      const r = (await listResults(ctx.dataDir, m.vm, m.id)).find((x) => x.id === req.params.id);
      const file = r ? screenshotPath(ctx.dataDir, r) : null;
      if (!file) throw new ReboundError('ERR_NOT_FOUND', `no screenshot kept for verification ${req.params.id} of ${m.vm}@${m.id}`);
      return reply.type('image/png').send(await fs.promises.readFile(file));
    },
  );
}
