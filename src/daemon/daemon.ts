/**
 * Daemon: the composition root of `rebound serve`. It owns the data directory (lock), the
 * publication catalog and what publishes into it (ad-hoc `--export`s, the repository's restore
 * points, recovery sessions), the front ends that render it (NBD, NFS, FUSE) and the HTTP API.
 * Shutdown order: API and listeners stop accepting, connections drain, sessions and the catalog
 * close, the repository closes, the lock is released.
 */
import type { FastifyInstance } from 'fastify';
import path from 'node:path';
import { RawFileDevice } from '../blockdev/base/raw-file.js';
import { CowOverlay } from '../blockdev/layers/cow/cow-overlay.js';
import { MemoryDevice } from '../blockdev/base/memory.js';
import type { BlockDevice } from '../blockdev/types.js';
import { buildStack } from '../blockdev/layer.js';
import type { ExportSpec } from '../config/export-spec.js';
import { MemoryTrim } from '../util/memory-trim.js';
import { plainConfig, type ValidatedConfig } from '../config/schema.js';
import { createApi } from '../api/server.js';
import { Catalog } from '../exports/catalog.js';
import { NbdServer } from '../nbd/server.js';
import type { NbdTlsMode } from '../nbd/client.js';
import { NbdTls } from '../tls/nbd-tls.js';
import { AccessPolicy, parseAccessRule } from '../tls/access.js';
import { formatTcpAddress, parseTcpAddress } from '../util/address.js';
import type { Logger } from '../util/log.js';
import { VERSION } from '../version.js';
import { DataDirLock } from './data-dir.js';
import { errorText, ReboundError } from '../errors.js';
import { JobRegistry } from '../api/jobs.js';
import { Repository } from '../repo/repository.js';
import { setChunkWorkerCount } from '../repo/chunk-worker.js';
import { PointPublisher } from '../recovery/point-publisher.js';
import { SessionManager } from '../recovery/session-manager.js';
import { backup } from '../repo/ingest.js';
import { DEMO_DISK, DEMO_VM, prepareDemoImage } from './demo.js';
import { FuseMounts } from '../fuse/manager.js';
import type { NfsServer } from '../nfs/server.js';
import type { XenFormat } from '../nfs/xen-names.js';
import type { IscsiServer } from '../iscsi/target.js';
import { PathPolicy } from '../util/path-policy.js';
import { ByteBudget } from '../util/byte-budget.js';
import { TokenStore, authDir } from '../auth/token-store.js';
import { loadCertDir } from '../tls/cert-dir.js';
import { openListenerWarnings } from './open-listeners.js';
import { Metrics } from '../metrics/metrics.js';
import { AlertMonitor } from '../alerts/monitor.js';
import { WebhookSender } from '../alerts/webhooks.js';
import { statfs } from 'node:fs/promises';
import { Verifier } from '../verify/verifier.js';

export interface DaemonEndpoints {
  nbd: string[];
  nbdSocket: string[];
  /** The NBD server's TLS mode: clients get nbds:// URIs and TLS options when it is not off. */
  nbdTls?: NbdTlsMode;
  http: string | undefined;
  /** NFS datastore listeners (MOUNT + NFS v3) and portmapper listeners, HOST:PORT. */
  nfs?: string[];
  portmap?: string[];
  /** How /xen shows session disks (nfsXenFormat), while the NFS datastore runs. */
  nfsXen?: XenFormat;
  /** iSCSI target listeners, HOST:PORT. */
  iscsi?: string[];
}

export class Daemon {
  readonly config: ValidatedConfig;
  readonly catalog: Catalog;
  readonly nbd: NbdServer;
  readonly startedAt = new Date();
  readonly jobs: JobRegistry;
  /** Payload bytes in flight over NBD and NFS together (maxInflightBytesTotal). */
  readonly inflightBudget: ByteBudget;
  #repo: Repository | undefined;
  #points: PointPublisher | undefined;
  #sessionManager: SessionManager | undefined;
  #fuse: FuseMounts | undefined;
  #nfs: NfsServer | undefined;
  #iscsi: IscsiServer | undefined;
  readonly #log: Logger;
  readonly #lock: DataDirLock;
  #api: FastifyInstance | undefined;
  #tokens: TokenStore | undefined;
  #endpoints: DaemonEndpoints = { nbd: [], nbdSocket: [], http: undefined };
  #closing: Promise<void> | undefined;
  readonly #memoryTrim: MemoryTrim;
  #metrics: Metrics | undefined;
  #verifier: Verifier | undefined;
  #alerts: { sender: WebhookSender; monitor: AlertMonitor } | undefined;
  /** Which paths requests may name (API routes) and open (their jobs, migrations). */
  get #paths(): PathPolicy {
    return (this.#pathPolicy ??= new PathPolicy({ sourceDirs: this.config.sourceDirs, targetDirs: this.config.targetDirs }));
  }
  #pathPolicy: PathPolicy | undefined;

  private constructor(config: ValidatedConfig, log: Logger, lock: DataDirLock) {
    this.config = config;
    this.#endpoints.nbdTls = config.nbdTls;
    this.#log = log;
    this.#lock = lock;
    this.catalog = new Catalog(log.child({ component: 'catalog' }));
    // Before anything is published: every opener of every disk is counted (metrics/io-meter.ts).
    this.#metrics = new Metrics({
      catalog: this.catalog,
      connections: () => ({
        nbd: this.nbd.connectionCount,
        ...(this.#nfs ? { nfs: this.#nfs.connectionCount } : {}),
        ...(this.#iscsi ? { iscsi: this.#iscsi.connectionCount } : {}),
      }),
    });
    this.catalog.openerLayer = this.#metrics.openerLayer;
    this.inflightBudget = new ByteBudget(config.maxInflightBytesTotal);
    this.#memoryTrim = new MemoryTrim(config.memoryTrimIntervalMs);
    this.jobs = new JobRegistry(log.child({ component: 'jobs' }));
    this.nbd = new NbdServer({
      exports: this.catalog.view('nbd'),
      log: log.child({ component: 'nbd' }),
      maxInflight: config.nbdMaxInflight,
      maxInflightBytes: config.nbdMaxInflightBytes,
      budget: this.inflightBudget,
      maxConnections: config.nbdMaxConnections,
      maxConnectionsPerClient: config.nbdMaxConnectionsPerClient,
      handshakeTimeoutMs: config.nbdHandshakeTimeoutMs,
    });
  }

  /** Starts everything; on any failure undoes what was started and rethrows. */
  static async start(config: ValidatedConfig, log: Logger): Promise<Daemon> {
    const lock = DataDirLock.acquire(config.dataDir);
    const daemon = new Daemon(config, log, lock);
    try {
      await daemon.#open();
    } catch (err) {
      await daemon.close();
      throw err;
    }
    return daemon;
  }

  get endpoints(): DaemonEndpoints {
    return this.#endpoints;
  }

  get repo(): Repository {
    if (!this.#repo) throw new ReboundError('ERR_INTERNAL', 'the repository is not open');
    return this.#repo;
  }

  /** The FUSE file-tree mounts (undefined until the repository is open). */
  get fuse(): FuseMounts | undefined {
    return this.#fuse;
  }

  /** The recovery session manager (undefined until the repository is open). */
  get sessionManager(): SessionManager | undefined {
    return this.#sessionManager;
  }

  /** After backups, prunes and deletes: the catalog follows the repository. */
  async #repoChanged(): Promise<void> {
    await this.#points?.sync();
    await this.#verifier?.pointsChanged().catch((err) => this.#log.warn('after-backup verification not started', { err: String(err) }));
  }

  async #open(): Promise<void> {
    await this.#setUpNbdTls();
    setChunkWorkerCount(this.config.chunkWorkers > 0 ? this.config.chunkWorkers : undefined);
    this.#repo = await Repository.open(this.config.dataDir, {
      chunkSize: this.config.chunkSize,
      cacheBytes: this.config.cacheSize,
      diskCacheBytes: this.config.diskCacheSize,
      s3RetryMs: this.config.s3RetryTime * 1000,
      keyFile: this.config.repoKeyFile === 'off' ? undefined : this.config.repoKeyFile,
      onS3Retry: (what, err, attempt) =>
        this.#log.warn(attempt < 0 ? 'object store: giving up' : 'object store: retrying', { request: what, error: errorText(err) }),
    });
    this.#points = new PointPublisher({ repo: this.#repo, catalog: this.catalog, log: this.#log.child({ component: 'points' }), onNbd: this.config.exportPoints });
    if (this.config.demo && (await this.#repo.points(DEMO_VM)).length === 0) {
      const image = prepareDemoImage(this.config.dataDir);
      const m = await backup(this.#repo, { vm: DEMO_VM, disks: [{ name: DEMO_DISK, source: image }], tags: ['demo'] });
      this.#log.info('demo disk backed up', { point: `${m.vm}@${m.id}` });
    }
    for (const spec of this.config.exportSpecs) {
      const { device, overlay } = await this.#openExport(spec);
      this.catalog.publish({
        name: spec.name,
        kind: 'adhoc',
        disk: spec.name,
        size: device.size,
        capabilities: device.capabilities(),
        publish: ['nbd', 'iscsi'],
        device,
        description: spec.description,
        source: sourceText(spec),
        details: overlay ? () => ({ overlay: overlay.stats() }) : undefined,
      });
      this.#log.info('export added', {
        export: spec.name,
        size: device.size,
        source: spec.source.kind,
        ...(overlay ? { overlay: overlay.dir, overlayBytes: overlay.stats().allocatedBytes } : {}),
      });
    }
    await this.#points.sync();
    this.#sessionManager = await SessionManager.open({
      dataDir: this.config.dataDir,
      repo: this.#repo,
      catalog: this.catalog,
      log: this.#log.child({ component: 'recovery' }),
      globalQos: { iops: this.config.qosIops, bps: this.config.qosBandwidth },
      paths: this.#paths,
      report: {
        warnAgeHours: this.config.sessionWarnAgeHours,
        warnBytes: this.config.sessionWarnSize,
        endpoints: () => this.#endpoints,
      },
    });
    this.#metrics?.attach({ repo: this.#repo, jobs: this.jobs, sessions: this.#sessionManager });
    this.#verifier = await this.#openVerifier();
    if (this.config.alertWebhooks.length > 0) this.#startAlerts();
    this.#fuse = new FuseMounts({ catalog: this.catalog.view('fuse'), log: this.#log.child({ component: 'fuse' }) });
    if (this.config.fuse !== 'off') await this.#fuse.mount(this.config.fuse);
    for (const a of this.config.nbd) {
      const { host, port } = parseTcpAddress(a);
      const bound = await this.nbd.listenTcp(host, port);
      if (bound.kind === 'tcp') this.#endpoints.nbd.push(formatTcpAddress(bound));
    }
    for (const p of this.config.nbdSocket) {
      await this.nbd.listenUnix(p);
      this.#endpoints.nbdSocket.push(p);
    }
    if (this.config.nfs.length > 0) await this.#startNfs();
    if (this.config.iscsi.length > 0) await this.#startIscsi();
    if (this.config.http !== 'off') {
      const { host, port } = parseTcpAddress(this.config.http);
      const tls = this.config.httpTls ? await this.#loadApiTls() : undefined;
      this.#tokens = await TokenStore.open(authDir(this.config.dataDir), { log: this.#log.child({ component: 'auth' }) });
      await this.#tokens.ensureAdminToken();
      this.#api = createApi({
        ...(tls ? { tls } : {}),
        catalog: this.catalog,
        log: this.#log.child({ component: 'api' }),
        version: VERSION,
        startedAt: this.startedAt,
        endpoints: () => this.#endpoints,
        config: () => ({ ...plainConfig(this.config) }),
        repo: this.#repo,
        jobs: this.jobs,
        repoChanged: () => this.#repoChanged(),
        fuse: this.#fuse,
        sessions: this.#sessionManager,
        paths: this.#paths,
        auth: { tokens: this.#tokens },
        ...(this.#verifier ? { verify: { verifier: this.#verifier, dataDir: this.config.dataDir, scriptDirs: this.config.verifyScriptDirs } } : {}),
        ...(this.#metrics ? { metrics: this.#metrics } : {}),
      });
      try {
        await this.#api.listen({ host, port });
      } catch (err) {
        throw new ReboundError('ERR_LISTEN_FAILED', `cannot listen for HTTP on ${this.config.http}: ${(err as Error).message}`, { cause: err });
      }
      const addr = this.#api.server.address();
      if (addr && typeof addr === 'object') this.#endpoints.http = formatTcpAddress({ host: addr.address, port: addr.port });
      this.#lock.update({ http: this.#endpoints.http });
      this.#log.info('HTTP API listening', { address: this.#endpoints.http, tls: Boolean(tls) });
    }
    const c = this.config;
    const facts = { nbd: this.#endpoints.nbd, nbdTls: c.nbdTls, nfs: this.#endpoints.nfs ?? [], nfsClients: c.nfsClients, http: this.#endpoints.http, httpTls: c.httpTls };
    for (const w of openListenerWarnings(facts)) this.#log.warn(w);
  }

  /** Verification boots (src/verify/): cleans what a killed daemon left, then schedules. */
  #openVerifier(): Promise<Verifier> {
    const c = this.config;
    return Verifier.open({
      repo: this.repo,
      dataDir: c.dataDir,
      log: this.#log.child({ component: 'verify' }),
      jobs: this.jobs,
      concurrency: c.verifyConcurrency,
      accel: c.verifyAccel,
      sharedQos: this.#sessionManager?.shared,
      qos: { iops: c.verifyIops, bps: c.verifyBandwidth },
      defaults: {
        timeoutSeconds: c.verifyTimeoutSeconds,
        ...(c.verifyExpectSerial !== 'off' ? { expectSerial: c.verifyExpectSerial } : {}),
        tcp: c.verifyTcpPorts.map(Number),
      },
      afterBackup: c.verifyAfterBackup,
      schedule: c.verifySchedule,
    });
  }

  /** Alert webhooks (src/alerts/): conditions checked every alertCheckSeconds. */
  #startAlerts(): void {
    const c = this.config;
    const log = this.#log.child({ component: 'alerts' });
    const sessions = this.#sessionManager;
    const sender = new WebhookSender({ urls: c.alertWebhooks, log });
    const monitor = new AlertMonitor({
      send: (m) => sender.send(m),
      sources: {
        sessions: sessions ? () => sessions.report() : undefined,
        jobs: () => this.jobs.list(),
        disk: async () => {
          const st = await statfs(c.dataDir);
          return { path: c.dataDir, totalBytes: st.blocks * st.bsize, freeBytes: st.bavail * st.bsize };
        },
      },
      thresholds: { warnAgeHours: c.sessionWarnAgeHours, warnBytes: c.sessionWarnSize, diskFreePercent: c.alertDiskFreePercent, stallMs: c.alertMigrationStallMinutes * 60_000 },
      log,
    }).start(c.alertCheckSeconds * 1000);
    this.#alerts = { sender, monitor };
    log.info('alert webhooks on', { webhooks: c.alertWebhooks.length });
  }

  /** HTTPS for the API (httpTls): the certificate and key of tlsCertDir, checked now. */
  async #loadApiTls(): Promise<{ cert: Buffer; key: Buffer }> {
    if (this.config.tlsCertDir === 'off') {
      throw new ReboundError('ERR_INVALID_ARGUMENT', 'httpTls (--http-tls) needs a certificate directory: set tlsCertDir (--tls-certificates DIR)');
    }
    const certs = await loadCertDir(this.config.tlsCertDir, { logger: this.#log.child({ component: 'api' }) });
    return { cert: certs.cert, key: certs.key };
  }

  /** Loads the NBD TLS credentials and access rules (first: bad credentials fail the start at once). */
  async #setUpNbdTls(): Promise<void> {
    const log = this.#log.child({ component: 'nbd' });
    const tls = await NbdTls.load(this.config, log);
    const rules = this.config.nbdAccess.map(parseAccessRule);
    if (!tls && rules.length > 0) log.warn('nbdAccess rules are ignored: NBD TLS is off (no identities without TLS)');
    if (tls && rules.length > 0 && !tls.verifyPeer && !tls.psk) {
      log.warn('nbdAccess rules need client identities: set --tls-verify-peer or --tls-psk, or no client gets an export');
    }
    this.nbd.configureTls(tls, new AccessPolicy({ enabled: tls !== undefined, rules }));
  }

  async #openExport(spec: ExportSpec): Promise<{ device: BlockDevice; overlay?: CowOverlay }> {
    const src = spec.source;
    if (src.kind === 'memory') return { device: new MemoryDevice(src.size) };
    let base: BlockDevice;
    let baseId: string;
    if (src.kind === 'repo') {
      // The overlay is tied to the resolved point: after a new backup, VM@latest means another base.
      const m = await this.repo.point(src.vm, src.point);
      base = await this.repo.openImage(m, src.disk);
      baseId = `repo:${m.vm}@${m.id}/${src.disk}`;
    } else {
      base = await RawFileDevice.open(src.path);
      baseId = src.path;
    }
    const cow = spec.cow;
    if (!cow) return { device: base };
    const device = await buildStack(base, [
      (n) => CowOverlay.open(n, { dir: cow.dir ?? defaultOverlayDir(this.config.dataDir, spec.name), baseId, maxBytes: cow.quota, blockSize: cow.blockSize }),
    ]);
    return { device, overlay: device as CowOverlay };
  }

  /** The NFS datastore (src/nfs/): sessions and restore points as files, after the repository opened. */
  async #startNfs(): Promise<void> {
    const c = this.config;
    // Loaded only when NFS is on: the codecs cost ~15 MiB of memory a daemon without NFS need not pay.
    const { NfsServer } = await import('../nfs/server.js');
    this.#nfs = new NfsServer({
      catalog: this.catalog.view('nfs'),
      stateDir: path.join(c.dataDir, 'nfs'),
      log: this.#log.child({ component: 'nfs' }),
      readOnly: c.nfsReadOnly,
      allowedClients: c.nfsClients,
      requirePrivilegedPort: c.nfsRequirePrivilegedPort,
      maxIoSize: c.nfsMaxIoSize,
      xenFormat: c.nfsXenFormat,
      budget: this.inflightBudget,
      startedAt: this.startedAt,
    });
    for (const a of c.nfs) {
      const { host, port } = parseTcpAddress(a);
      await this.#nfs.listen(host, port);
    }
    if (String(c.portmap) !== 'off') {
      const { host, port } = parseTcpAddress(String(c.portmap), parseTcpAddress(c.nfs[0]!).host);
      await this.#nfs.listenPortmap(host, port);
    }
    this.#endpoints.nfs = this.#nfs.endpoints.nfs;
    this.#endpoints.portmap = this.#nfs.endpoints.portmap;
    this.#endpoints.nfsXen = c.nfsXenFormat;
  }

  /** The iSCSI target (src/iscsi/): sessions and restore points as targets, one LUN per disk. */
  async #startIscsi(): Promise<void> {
    const { IscsiServer } = await import('../iscsi/target.js');
    const { loadChapFile } = await import('../iscsi/chap-file.js');
    const chap = this.config.iscsiChapFile === 'off' ? undefined : loadChapFile(this.config.iscsiChapFile);
    this.#iscsi = new IscsiServer({ view: this.catalog.view('iscsi'), log: this.#log.child({ component: 'iscsi' }), budget: this.inflightBudget, ...(chap ? { chap } : {}) });
    this.#endpoints.iscsi = [];
    for (const a of this.config.iscsi) {
      const { host, port } = parseTcpAddress(a);
      this.#endpoints.iscsi.push(formatTcpAddress(await this.#iscsi.listen(host, port)));
    }
  }

  /** Graceful shutdown; idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#log.info('shutting down');
      await Promise.allSettled([this.#api?.close(), this.nbd.close(this.config.shutdownTimeoutMs), this.jobs.close(), this.#nfs?.close(this.config.shutdownTimeoutMs), this.#iscsi?.close()]);
      await this.#tokens?.close();
      this.#metrics?.close();
      this.#memoryTrim.stop();
      this.#alerts?.monitor.stop();
      this.#verifier?.close();
      this.#alerts?.sender.close();
      await this.#fuse?.close();
      await this.#sessionManager?.close();
      await this.catalog.close();
      await this.#repo?.close();
      this.#lock.release();
      this.#log.info('stopped');
    })();
    return this.#closing;
  }
}

function sourceText(spec: ExportSpec): string {
  const s = spec.source;
  if (s.kind === 'file') return s.path;
  if (s.kind === 'memory') return `memory:${s.size}`;
  return `repo:${s.vm}@${s.point}/${s.disk}`;
}

/** Where an export's overlay lives unless `cow=DIR` says otherwise. */
export function defaultOverlayDir(dataDir: string, exportName: string): string {
  return path.join(dataDir, 'overlays', encodeURIComponent(exportName));
}
