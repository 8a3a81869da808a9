/**
 * Recovery session routes of the HTTP API: recover, the sessions report, QoS (per session and
 * global, changeable live), migrate / switch / finish, commit, discard. Migration and commit run
 * as jobs (progress through /v1/jobs/ID); the session's own report also shows migration progress.
 * The routes only call SessionManager: every workflow (migrate -> wait -> switch) lives there.
 * Migration targets that are paths pass the daemon's path policy (util/path-policy.ts) first.
 * Each route's permission and the VM it names (a session's VM) are in its `config` (api/auth.ts).
 */
import { sessionIqn } from '../iscsi/names.js';
import { xenSrPath, xenSrUuid, xenVdiFile, xenVdiUuid, type XenFormat } from '../nfs/xen-names.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { tokenSees } from './auth.js';
import type { QosLimits } from '../blockdev/layers/qos.js';
import type { SessionManager, RecoverRequest, MigrateRequest } from '../recovery/session-manager.js';
import type { MigrationProgress } from '../recovery/migration.js';
import { sessionEntryName } from '../exports/catalog.js';
import { nbdUris, type NbdTlsMode } from '../nbd/client.js';
import { parseTcpAddress } from '../util/address.js';
import type { JobRegistry } from './jobs.js';
import { isNbdUri } from '../nbd/client.js';
import { checkNbdSocket } from '../repo/sources.js';
import type { PathPolicy } from '../util/path-policy.js';

export interface SessionRouteContext {
  sessions: SessionManager;
  jobs: JobRegistry;
  /** Which file targets a migration may name (targetDirs). */
  paths: PathPolicy;
  endpoints: () => { nbd: string[]; nbdSocket: string[]; iscsi?: string[]; nbdTls?: NbdTlsMode; nfs?: string[]; nfsXen?: XenFormat };
  /** After a commit added a restore point. */
  repoChanged: () => Promise<void>;
}

const name = { type: 'string', minLength: 1, maxLength: 128 } as const;
const limit = { type: 'integer', minimum: 0 } as const;
const qosSchema = { type: 'object', additionalProperties: false, properties: { iops: limit, bps: limit } } as const;

/**
 * Ready-to-paste ways to attach the session's disks: NBD URIs, QEMU options, libvirt XML. With
 * the NBD server's TLS on, the URIs are nbds://, QEMU gets a tls-creds-x509 object reading the
 * client's certificates from QEMU_TLS_DIR (libvirt's default nbd_tls_x509_cert_dir; a PSK client
 * uses tls-creds-psk instead, docs/security.md) and libvirt's source says tls='yes'.
 */
export function connectionInfo(ctx: SessionRouteContext, session: string, disks: string[]): Record<string, unknown> {
  const ep = ctx.endpoints();
  const tcp = ep.nbd[0];
  const tls = ep.nbdTls === 'on' || ep.nbdTls === 'require';
  const tlsObject = tls ? `-object tls-creds-x509,id=tls0,dir=${QEMU_TLS_DIR},endpoint=client ` : '';
  const tlsOption = tls ? ',tls-creds=tls0' : '';
  const out = disks.map((disk, i) => {
    const exp = sessionEntryName(session, disk);
    const uri = nbdUris(exp, ep)[0] ?? null;
    const node = `${session}-${disk}`.replace(/[^A-Za-z0-9_-]/g, '_');
    const { host, port } = tcp ? parseTcpAddress(tcp) : { host: undefined, port: undefined };
    const server = tcp ? `server.type=inet,server.host=${host},server.port=${port}` : `server.type=unix,server.path=${ep.nbdSocket[0]}`;
    const dev = `vd${String.fromCharCode(97 + i)}`;
    const sourceOpen = `<source protocol='nbd' name='${exp}'${tls ? " tls='yes'" : ''}>`;
    const source = tcp
      ? `${sourceOpen}<host name='${host}' port='${port}'/></source>`
      : `${sourceOpen}<host transport='unix' socket='${ep.nbdSocket[0]}'/></source>`;
    // QEMU parses no nbds:// URI: with TLS the drive names the server with options.
    const qemuDrive = tls
      ? `${tlsObject}-drive driver=nbd,${server},export=${exp}${tlsOption},if=virtio,cache=none,discard=unmap`
      : uri
        ? `-drive file=${uri},format=raw,if=virtio,cache=none,discard=unmap`
        : null;
    return {
      disk,
      export: exp,
      nbdUri: uri,
      qemuDrive,
      qemuBlockdev: `${tlsObject}-blockdev driver=nbd,${server},export=${exp}${tlsOption},node-name=${node} -device virtio-blk-pci,drive=${node}`,
      libvirt: `<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none' discard='unmap'/>${source}<target dev='${dev}' bus='virtio'/></disk>`,
    };
  });
  return { disks: out };
}

/** Where the QEMU lines expect the client's ca-cert.pem, client-cert.pem and client-key.pem. */
export const QEMU_TLS_DIR = '/etc/pki/qemu';

/** The session's iSCSI target (docs/hyperv.md): portals, IQN, LUN per disk (disk-name order, as src/iscsi/names.ts numbers them). */
export function iscsiInfo(ctx: SessionRouteContext, session: string, published: boolean, disks: string[]): Record<string, unknown> | null {
  const portals = ctx.endpoints().iscsi ?? [];
  if (!published || portals.length === 0) return null;
  const iqn = sessionIqn(session);
  const sorted = [...disks].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { portals, iqn, luns: sorted.map((disk, lun) => ({ lun, disk, url: `iscsi://${portals[0]}/${iqn}/${lun}` })) };
}

/** The session as a XenServer NFS storage repository (docs/xenserver.md): server, SR path and UUID, a VDI per disk. */
export function xenInfo(ctx: SessionRouteContext, session: string, createdAt: string, published: boolean, disks: string[]): Record<string, unknown> | null {
  const ep = ctx.endpoints();
  const format = ep.nfsXen ?? 'off';
  if (!published || !ep.nfs?.length || format === 'off') return null;
  const created = new Date(createdAt);
  return {
    servers: ep.nfs,
    srUuid: xenSrUuid(session, created),
    path: xenSrPath(session, created),
    vdis: disks.map((disk) => ({ disk, uuid: xenVdiUuid(session, created, disk), file: xenVdiFile(session, created, disk, format) })),
  };
}

export function registerSessionRoutes(app: FastifyInstance, ctx: SessionRouteContext): void {
  const { sessions, jobs } = ctx;
  // The VM of the session a route names ([] when there is none: the route answers 404).
  const sessionVm = (req: FastifyRequest): string[] => {
    const s = sessions.get((req.params as { name: string }).name);
    return s ? [s.info.vm] : [];
  };
  const read = { permission: 'read' } as const;
  const operate = { permission: 'operate' } as const;
  const onSession = { config: { ...operate, vms: sessionVm } };
  const withConnection = (n: string): Record<string, unknown> => {
    const [report] = sessions.report(n);
    const disks = report!.disks.map((d) => d.name);
    return {
      ...report,
      connect: report!.publish.nbd ? connectionInfo(ctx, n, disks) : null,
      iscsi: iscsiInfo(ctx, n, report!.publish.iscsi === true, disks),
      xen: xenInfo(ctx, n, report!.createdAt, report!.publish.nfs, disks),
    };
  };

  app.get('/v1/sessions', { config: read }, async (req) => ({
    sessions: sessions.report().filter((r) => tokenSees(req, r.vm)),
    broken: req.token?.vms?.length ? [] : sessions.broken,
  }));

  app.get<{ Params: { name: string } }>('/v1/sessions/:name', { config: { ...read, vms: sessionVm } }, async (req) => withConnection(req.params.name));

  app.post<{ Body: RecoverRequest }>(
    '/v1/sessions',
    {
      config: { ...operate, vms: (req) => [(req.body as RecoverRequest).vm] },
      schema: {
        body: {
          type: 'object',
          required: ['vm'],
          additionalProperties: false,
          properties: {
            vm: name,
            point: { type: 'string', minLength: 1 },
            name,
            quota: { type: 'integer', minimum: 1 },
            qos: qosSchema,
            publish: { type: 'object', additionalProperties: false, properties: { nbd: { type: 'boolean' }, nfs: { type: 'boolean' }, fuse: { type: 'boolean' }, iscsi: { type: 'boolean' } } },
            allow: { type: 'array', maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 1024 } },
          },
        },
      },
    },
    async (req, reply) => {
      const s = await sessions.recover(req.body);
      return reply.status(201).send(withConnection(s.name));
    },
  );

  app.delete<{ Params: { name: string } }>('/v1/sessions/:name', onSession, async (req) => {
    await sessions.discard(req.params.name);
    return { discarded: req.params.name };
  });

  app.put<{ Params: { name: string }; Body: QosLimits }>('/v1/sessions/:name/qos', { ...onSession, schema: { body: qosSchema } }, async (req) => {
    const s = await sessions.setQos(req.params.name, req.body ?? {});
    return { session: s.name, qos: s.limiter.limits };
  });

  app.get('/v1/qos', { config: read }, async () => ({ qos: sessions.shared.limits }));
  // Global: a token limited to some VMs cannot change it (api/auth.ts).
  app.put<{ Body: QosLimits }>('/v1/qos', { config: operate, schema: { body: qosSchema } }, async (req) => {
    sessions.setGlobalQos(req.body ?? {});
    return { qos: sessions.shared.limits };
  });

  app.post<{ Params: { name: string }; Body: MigrateRequest }>(
    '/v1/sessions/:name/migrate',
    {
      ...onSession,
      schema: {
        body: {
          type: 'object',
          required: ['to'],
          additionalProperties: false,
          properties: { to: { type: 'string', minLength: 1 }, disks: { type: 'array', items: name }, rate: limit, switch: { type: 'boolean' } },
        },
      },
    },
    async (req, reply) => {
      const n = req.params.name;
      // Every target as it will be opened ({disk} expanded) passes the path policy before any is.
      const diskNames = req.body.disks?.length ? req.body.disks : sessions.require(n).disks.map((d) => d.name);
      for (const disk of diskNames) {
        const to = req.body.to.replaceAll('{disk}', disk);
        if (isNbdUri(to)) checkNbdSocket(to, ctx.paths.gate('target', `migration target of disk ${disk}:`));
        else ctx.paths.checkTarget(to, `migration target of disk ${disk}:`);
      }
      // Starting (and its checks: session, disks, states, paths) answers the request itself; the
      // way home is the job.
      const disks = await sessions.migrate(n, req.body);
      const job = jobs.start('migrate', { session: n, vm: sessions.require(n).info.vm, ...req.body }, (signal, progress) =>
        sessions.home(n, disks, { signal, switch: req.body.switch, onProgress: (ps) => progress(sumProgress(ps)) }),
      );
      return reply.status(202).send(job);
    },
  );

  app.delete<{ Params: { name: string }; Querystring: { disk?: string } }>(
    '/v1/sessions/:name/migrate',
    { ...onSession, schema: { querystring: { type: 'object', properties: { disk: { type: 'string', minLength: 1, description: 'cancel only this disk\'s migration' } } } } },
    async (req) => {
      await sessions.cancelMigration(req.params.name, req.query.disk ? [req.query.disk] : undefined);
      return withConnection(req.params.name);
    },
  );

  app.post<{ Params: { name: string } }>('/v1/sessions/:name/switch', onSession, async (req) => {
    const verified = await sessions.switchOver(req.params.name);
    return { ...withConnection(req.params.name), verified };
  });

  app.post<{ Params: { name: string } }>('/v1/sessions/:name/finish', onSession, async (req) => {
    await sessions.finish(req.params.name);
    return { finished: req.params.name };
  });

  app.post<{ Params: { name: string }; Body: { tags?: string[] } }>(
    '/v1/sessions/:name/commit',
    { ...onSession, schema: { body: { type: 'object', additionalProperties: false, properties: { tags: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 64 } } } } } },
    async (req, reply) => {
      const n = req.params.name;
      const s = sessions.require(n);
      const job = jobs.start(
        'commit',
        { session: n, vm: s.info.vm },
        (signal, progress) => sessions.commit(n, req.body ?? {}, { signal, onProgress: (p) => progress({ ...p }) }),
        async (info) => {
          if (info.state === 'succeeded') await ctx.repoChanged();
        },
      );
      return reply.status(202).send(job);
    },
  );
}

function sumProgress(ps: MigrationProgress[]): Record<string, unknown> {
  return {
    totalBytes: ps.reduce((a, p) => a + p.totalBytes, 0),
    doneBytes: ps.reduce((a, p) => a + p.doneBytes, 0),
    dirtyBytes: ps.reduce((a, p) => a + p.dirtyBytes, 0),
    rate: ps.reduce((a, p) => a + p.rate, 0),
    states: ps.map((p) => p.state),
    disks: ps,
  };
}
