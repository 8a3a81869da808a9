/**
 * IscsiServer: accepts iSCSI initiators on TCP (RFC 7143, port 3260 by convention) and serves the
 * disks the catalog publishes on 'iscsi' (names.ts renders them as targets). One IscsiConnection
 * per socket; MaxConnections is 1, so a session is its connection.
 *
 * Limits, like the NBD server's (docs/security.md, Limits): connections open at once in total and
 * per client address (more are closed on accept), a login that has not reached the full feature
 * phase within the login timeout is dropped, payload bytes of the commands running per connection
 * are bounded (`maxInflightBytes`) and share the daemon's ByteBudget with NBD and NFS.
 *
 * Sessions are registered by I_T nexus (InitiatorName + ISID + target): a login with the same key
 * reinstates the session, ending the old one (its tasks drained) before the new one is answered.
 * Persistent reservations are kept per published disk here (one table for every session that
 * reaches it) and dropped when the disk is unpublished.
 *
 * Lifecycle: listen() may be called more than once; close() stops accepting and ends every
 * connection (in-flight device requests drain); destroy() cuts everything at once.
 */
import net from 'node:net';
import { errorText, ReboundError } from '../errors.js';
import type { CatalogEntry, CatalogView } from '../exports/catalog.js';
import { ByteBudget } from '../util/byte-budget.js';
import { clientAddress, ConnectionLimits } from '../util/connection-limits.js';
import { LogLimiter } from '../util/log-limiter.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { IscsiConnection, type ConnectionHost } from './connection.js';
import { DEFAULT_LOGIN_LIMITS, LoginStatus, type ChapCredentials, type LoginContext, type LoginLimits } from './login.js';
import { renderTargets, type IscsiTarget } from './names.js';
import { ReservationFile } from './reservation-file.js';
import { PersistentReservations } from './reservations.js';
import { DEFAULT_QUEUE_DEPTH, type IscsiSession } from './session.js';

export interface IscsiServerOptions {
  /** The catalog's 'iscsi' view. */
  view: CatalogView;
  log?: Logger;
  /** CHAP every initiator must pass (discovery and normal sessions); absent: no authentication. */
  chap?: ChapCredentials;
  /** Connections open at once (default 256). */
  maxConnections?: number;
  /** Connections open at once from one address (default 32). */
  maxConnectionsPerClient?: number;
  /** A login not finished this long after the accept is dropped (default 30 s). */
  loginTimeoutMs?: number;
  /** Payload bytes of the commands running on one connection (default 64 MiB). */
  maxInflightBytes?: number;
  /** The daemon's total of payload bytes in flight (shared with NBD and NFS). */
  budget?: ByteBudget;
  /** Commands queued per session (the CmdSN window, default 64). */
  queueDepth?: number;
  limits?: Partial<LoginLimits>;
  logLimiter?: LogLimiter;
}

export const DEFAULT_ISCSI_PORT = 3260;
const PORTAL_GROUP_TAG = 1;

export class IscsiServer {
  readonly #view: CatalogView;
  readonly #log: Logger;
  readonly #opts: Required<Omit<IscsiServerOptions, 'view' | 'log' | 'chap' | 'limits'>> & { chap: ChapCredentials | undefined; limits: LoginLimits };
  readonly #listeners: net.Server[] = [];
  readonly #connections = new Set<IscsiConnection>();
  /** Connections in all and per client address (util/connection-limits.ts). */
  readonly #limits: ConnectionLimits;
  readonly #sessions = new Map<string, IscsiSession>();
  /** Persistent reservations per published disk (catalog entry name); dropped with the entry. */
  readonly #reservations = new Map<string, Promise<PersistentReservations>>();
  #tsih = 0;
  #shuttingDown = false;
  #cache: { version: number; targets: IscsiTarget[] } = { version: -1, targets: [] };
  readonly #unsubscribe: () => void;

  constructor(opts: IscsiServerOptions) {
    this.#view = opts.view;
    this.#log = opts.log ?? silentLogger;
    // A disk taken away (a discarded session, a pruned point): sessions using it end, so the
    // initiator sees the target gone (its next login fails) rather than a LUN that is NOT READY.
    this.#unsubscribe = this.#view.onChange((entry, what) => {
      if (what !== 'removed') return;
      this.#reservations.delete(entry.name);
      for (const c of this.#connections) {
        const units = c.session?.units;
        if (units && [...units.values()].some((u) => u.unit.id === entry.name)) {
          this.#log.info('iSCSI session ended: its disk was unpublished', { export: entry.name, initiator: c.session!.initiatorName });
          void c.terminate();
        }
      }
    });
    this.#opts = {
      maxConnections: opts.maxConnections ?? 256,
      maxConnectionsPerClient: opts.maxConnectionsPerClient ?? 32,
      loginTimeoutMs: opts.loginTimeoutMs ?? 30_000,
      maxInflightBytes: opts.maxInflightBytes ?? 64 * 1024 * 1024,
      budget: opts.budget ?? new ByteBudget(512 * 1024 * 1024),
      queueDepth: opts.queueDepth ?? DEFAULT_QUEUE_DEPTH,
      logLimiter: opts.logLimiter ?? new LogLimiter(),
      chap: opts.chap,
      limits: { ...DEFAULT_LOGIN_LIMITS, ...opts.limits },
    };
    this.#limits = new ConnectionLimits(this.#opts);
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Targets as the catalog renders them now (cached until the catalog changes). */
  targets(): IscsiTarget[] {
    const v = this.#view.catalog.version;
    if (this.#cache.version !== v) this.#cache = { version: v, targets: renderTargets(this.#view) };
    return this.#cache.targets;
  }

  /** Listens on TCP; port 0 picks a free port. Resolves with the bound address. */
  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer({ noDelay: true }, (socket) => this.handleSocket(socket));
      srv.once('error', (err) => reject(new ReboundError('ERR_LISTEN_FAILED', `cannot listen for iSCSI on ${host}:${port}: ${err.message}`, { cause: err })));
      srv.listen({ host, port }, () => {
        srv.on('error', (err) => this.#log.error('iSCSI listener error', { err: err.message }));
        this.#listeners.push(srv);
        const a = srv.address() as net.AddressInfo;
        this.#log.info('iSCSI listening', { address: `${a.address}:${a.port}` });
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  handleSocket(socket: net.Socket): void {
    socket.on('error', () => undefined);
    if (this.#shuttingDown) {
      socket.destroy();
      return;
    }
    const client = clientAddress(socket);
    const admission = this.#limits.admit(client);
    if (!admission.admitted) {
      socket.destroy();
      const total = admission.over === 'total';
      this.#opts.logLimiter.warn(this.#log, total ? 'iscsi-connection-limit' : 'iscsi-client-connection-limit', client, 'iSCSI connection limit reached; closing new connection', {
        client,
        limit: admission.limit,
      });
      return;
    }
    socket.setNoDelay(true);
    const log = this.#log.child({ peer: `${socket.remoteAddress}:${socket.remotePort}` });
    const conn = new IscsiConnection(socket, this.#host(), log, new ByteBudget(this.#opts.maxInflightBytes), client);
    this.#connections.add(conn);
    conn.serve().finally(() => {
      this.#connections.delete(conn);
      admission.release();
    });
  }

  #host(): ConnectionHost {
    const server = this;
    const o = this.#opts;
    return {
      log: this.#log,
      budget: o.budget,
      maxInflightBytes: o.maxInflightBytes,
      loginTimeoutMs: o.loginTimeoutMs,
      queueDepth: o.queueDepth,
      get shuttingDown() {
        return server.#shuttingDown;
      },
      refuse: (kind, client, msg, fields) => {
        o.logLimiter.warn(this.#log, kind, client, msg, { client, ...fields });
      },
      loginContext: (): LoginContext => ({
        portalGroupTag: PORTAL_GROUP_TAG,
        limits: o.limits,
        chap: o.chap,
        targetExists: (name) => this.#target(name) !== undefined,
        tsihStatus: (tsih) => ([...this.#sessions.values()].some((s) => s.tsih === tsih) ? LoginStatus.TooManyConnections : LoginStatus.SessionDoesNotExist),
      }),
      newTsih: () => {
        this.#tsih = this.#tsih >= 0xffff ? 1 : this.#tsih + 1;
        return this.#tsih;
      },
      target: (name) => this.#target(name),
      targets: () => this.targets(),
      register: async (session) => {
        const old = this.#sessions.get(session.key);
        if (old) {
          this.#log.info('iSCSI session reinstated', { initiator: session.initiatorName, target: session.targetName ?? '(discovery)' });
          await old.terminate().catch((err) => this.#log.warn('ending the reinstated session failed', { err: errorText(err) }));
        }
        this.#sessions.set(session.key, session);
      },
      unregister: (session) => {
        if (this.#sessions.get(session.key) === session) this.#sessions.delete(session.key);
      },
      reservations: (entry) => {
        let r = this.#reservations.get(entry.name);
        if (!r) this.#reservations.set(entry.name, (r = this.#openReservations(entry)));
        return r;
      },
      warmReset: async (targetName, except) => {
        const others = [...this.#connections].filter((c) => c.session && c.session !== except && c.session.targetName === targetName);
        await Promise.all(others.map((c) => c.abortTasks(() => true)));
      },
    };
  }

  /**
   * A disk's reservation table: a session disk's persists through power loss in the session's
   * directory (reservation-file.ts, loaded here); other disks' live in memory only.
   */
  async #openReservations(entry: CatalogEntry): Promise<PersistentReservations> {
    const abortTasks = (ids: string[]): Promise<void> => this.#abortNexusTasks(entry.name, ids);
    if (!entry.session) return new PersistentReservations({ abortTasks });
    const store = ReservationFile.forSessionDisk(entry.session.filesDir, entry.disk);
    const initial = await store.load().catch((err: unknown) => {
      this.#log.warn('iSCSI: persistent reservations of a disk could not be read; starting without them', { export: entry.name, file: store.file, err: errorText(err) });
      return undefined;
    });
    return new PersistentReservations({ abortTasks, store, ...(initial ? { initial } : {}) });
  }

  /** PREEMPT AND ABORT: ends the commands the preempted sessions have running on the disk `entryName`. */
  async #abortNexusTasks(entryName: string, nexusIds: string[]): Promise<void> {
    const victims = [...this.#connections].filter((c) => c.session && nexusIds.includes(c.session.key));
    await Promise.all(
      victims.map((c) => {
        const luns = [...c.session!.units.values()].filter((u) => u.unit.id === entryName).map((u) => u.lun);
        return c.abortTasks((t) => luns.includes(t.lun));
      }),
    );
  }

  #target(name: string): IscsiTarget | undefined {
    const n = name.toLowerCase();
    return this.targets().find((t) => t.name === n);
  }

  async close(): Promise<void> {
    this.#shuttingDown = true;
    this.#unsubscribe();
    const closing = this.#listeners.map((l) => new Promise<void>((r) => l.close(() => r())));
    await Promise.all([...this.#connections].map((c) => c.terminate()));
    await Promise.all(closing);
  }

  destroy(): void {
    this.#shuttingDown = true;
    this.#unsubscribe();
    for (const l of this.#listeners) l.close();
    for (const c of this.#connections) void c.terminate();
  }
}

