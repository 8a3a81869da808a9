/**
 * NbdServer: accepts NBD clients on TCP and Unix sockets and serves the disks the catalog
 * publishes on NBD (exports/catalog.ts, its 'nbd' view). One NbdConnection per socket: handshake
 * (handshake.ts), then transmission (transmission.ts) over the export opened for that connection
 * (its own checked() gate, closed when the client leaves). A failure on one connection is logged
 * and closes only that connection.
 *
 * TLS (tls/nbd-tls.ts): a connection starts in plain text; on NBD_OPT_STARTTLS the handshake hands
 * the raw socket to NbdTls.upgrade() and goes on with a reader on the TLS socket, which transmission
 * then uses (through tls/record-coalescer.ts: one batch of records per macrotask, not one 'data'
 * event per request). The handshake timeout covers the TLS handshake. `access` (tls/access.ts)
 * decides per identity which exports a connection may open.
 *
 * Lifecycle: listen*() may be called several times; close() stops accepting, lets every
 * connection finish its in-flight requests (new ones get ESHUTDOWN) and then closes the sockets,
 * destroying whatever is left after the timeout; destroy() cuts everything at once.
 */
import fs from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { errorText, ReboundError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { enlargeSendBuffer, UNIX_SEND_BUFFER } from '../native/socket-buffer.js';
import { AccessPolicy, identityText } from '../tls/access.js';
import { TlsRefused, type NbdTls, type TlsUpgrade } from '../tls/nbd-tls.js';
import { RecordCoalescer } from '../tls/record-coalescer.js';
import { ByteReader, ConnectionClosed } from './byte-reader.js';
import { negotiate, ProtocolViolation, type ExportLookup } from './handshake.js';
import { ReplyBufferPool } from './reply-buffers.js';
import { LogLimiter } from '../util/log-limiter.js';
import { ByteBudget } from '../util/byte-budget.js';
import { clientAddress, ConnectionLimits, endGracefully } from '../util/connection-limits.js';
import { DEFAULT_MAX_INFLIGHT_BYTES, StopRequested, Transmission } from './transmission.js';

export interface NbdServerOptions {
  exports: ExportLookup;
  log?: Logger;
  /** Requests processed concurrently per connection (default 256). */
  maxInflight?: number;
  /** Payload bytes of the requests running on one connection (default 64 MiB; see transmission.ts). */
  maxInflightBytes?: number;
  /** The daemon's total of payload bytes in flight, shared with NFS (default: a budget of DEFAULT_MAX_INFLIGHT_BYTES_TOTAL). */
  budget?: ByteBudget;
  /** A client that has not finished the handshake this long after the accept is dropped (default 30 s). */
  handshakeTimeoutMs?: number;
  /** Connections open at once across all listeners; more are closed on accept (default 1024). */
  maxConnections?: number;
  /** Connections open at once from one remote address ("unix" for Unix sockets; default 64). */
  maxConnectionsPerClient?: number;
  /** Rate limit of refusal log lines, per kind and client address (default: one of its own). */
  logLimiter?: LogLimiter;
  /** TLS (NBD_OPT_STARTTLS); absent: off. */
  tls?: NbdTls;
  /** Who may open what once connections have identities (default: everyone, everything). */
  access?: AccessPolicy;
}

export const DEFAULT_MAX_CONNECTIONS = 1024;
export const DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 64;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_INFLIGHT_BYTES_TOTAL = 512 * 1024 * 1024;

export type NbdListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export class NbdServer {
  readonly #opts: ConnectionOptions;
  readonly #log: Logger;
  readonly #listeners: net.Server[] = [];
  readonly #connections = new Set<NbdConnection>();
  /** Connections per listener set and per client address (util/connection-limits.ts). */
  readonly #limits: ConnectionLimits;
  readonly #buffers = new ReplyBufferPool();
  #nextId = 1;
  #shuttingDown = false;

  constructor(opts: NbdServerOptions) {
    this.#opts = {
      maxInflight: 256,
      maxInflightBytes: DEFAULT_MAX_INFLIGHT_BYTES,
      handshakeTimeoutMs: DEFAULT_HANDSHAKE_TIMEOUT_MS,
      maxConnections: DEFAULT_MAX_CONNECTIONS,
      maxConnectionsPerClient: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
      access: AccessPolicy.OPEN,
      ...opts,
      budget: opts.budget ?? new ByteBudget(DEFAULT_MAX_INFLIGHT_BYTES_TOTAL),
      logLimiter: opts.logLimiter ?? new LogLimiter(),
    };
    this.#log = opts.log ?? silentLogger;
    this.#limits = new ConnectionLimits(this.#opts);
  }

  /**
   * Sets TLS and the access policy for connections accepted from now on (the daemon loads the
   * credentials, which is asynchronous, before it listens).
   */
  configureTls(tls: NbdTls | undefined, access: AccessPolicy = AccessPolicy.OPEN): void {
    if (tls) this.#opts.tls = tls;
    else delete this.#opts.tls;
    this.#opts.access = access;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Listens on TCP; port 0 picks a free port. Resolves with the bound address. */
  listenTcp(host: string, port: number): Promise<NbdListenAddress> {
    return this.#listen((srv, cb) => srv.listen({ host, port }, cb), `${host}:${port}`).then((srv) => {
      const a = srv.address() as net.AddressInfo;
      return { kind: 'tcp', host: a.address, port: a.port };
    });
  }

  /** Listens on a Unix socket, replacing a stale socket file left by a killed daemon. */
  async listenUnix(path: string): Promise<NbdListenAddress> {
    try {
      if (fs.statSync(path).isSocket()) fs.unlinkSync(path);
    } catch {
      // absent: fine
    }
    await this.#listen((srv, cb) => srv.listen({ path }, cb), path);
    return { kind: 'unix', path };
  }

  #listen(start: (srv: net.Server, cb: () => void) => void, label: string): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer({ noDelay: true }, (socket) => this.handleSocket(socket));
      srv.once('error', (err) =>
        reject(new ReboundError('ERR_LISTEN_FAILED', `cannot listen for NBD on ${label}: ${err.message}`, { cause: err })),
      );
      start(srv, () => {
        srv.on('error', (err) => this.#log.error('NBD listener error', { err: err.message }));
        this.#listeners.push(srv);
        this.#log.info('NBD listening', { address: label });
        resolve(srv);
      });
    });
  }

  /** Serves one already-connected socket (listeners, socket activation, tests). */
  handleSocket(socket: net.Socket): void {
    if (this.#shuttingDown) {
      socket.destroy();
      return;
    }
    const client = clientAddress(socket);
    const admission = this.#limits.admit(client);
    if (!admission.admitted) {
      socket.on('error', () => undefined);
      socket.destroy();
      const total = admission.over === 'total';
      const kind = total ? 'nbd-connection-limit' : 'nbd-client-connection-limit';
      this.#opts.logLimiter.warn(this.#log, kind, client, total ? 'NBD connection limit reached; closing new connection' : 'NBD per-client connection limit reached; closing new connection', {
        client,
        limit: admission.limit,
        setting: total ? 'nbdMaxConnections' : 'nbdMaxConnectionsPerClient',
      });
      return;
    }
    // Unix-socket clients (QEMU, nbdcopy and migrations on the gateway) read large replies faster
    // with more than wmem_default's 208 KiB in flight (native/socket-buffer.ts).
    if (client === 'unix') enlargeSendBuffer(socket, UNIX_SEND_BUFFER);
    const conn = new NbdConnection(this.#nextId++, socket, this, this.#log, this.#opts, this.#buffers);
    this.#connections.add(conn);
    conn.serve().finally(() => {
      this.#connections.delete(conn);
      admission.release();
    });
  }

  /** Graceful shutdown: stop accepting, drain every connection, close. */
  async close(timeoutMs = 10_000): Promise<void> {
    this.#shuttingDown = true;
    const closing = this.#listeners.map((l) => new Promise<void>((r) => l.close(() => r())));
    const draining = Promise.all([...this.#connections].map((c) => c.close()));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
    await Promise.race([draining, timeout]);
    clearTimeout(timer);
    for (const c of this.#connections) c.destroy();
    await Promise.all(closing);
  }

  destroy(): void {
    this.#shuttingDown = true;
    for (const l of this.#listeners) l.close();
    for (const c of this.#connections) c.destroy();
  }
}

type ConnectionOptions = Required<Omit<NbdServerOptions, 'log' | 'tls'>> & { tls?: NbdTls };

class NbdConnection {
  /** The raw socket, and the TLS socket (or record stream) over it once the client sent STARTTLS. */
  readonly #raw: net.Socket;
  #socket: Duplex;
  readonly #server: NbdServer;
  readonly #log: Logger;
  readonly #opts: ConnectionOptions;
  readonly #buffers: ReplyBufferPool;
  #transmission: Transmission | undefined;

  constructor(
    id: number,
    socket: net.Socket,
    server: NbdServer,
    log: Logger,
    opts: ConnectionOptions,
    buffers: ReplyBufferPool,
  ) {
    this.#raw = socket;
    this.#socket = socket;
    this.#buffers = buffers;
    this.#server = server;
    this.#opts = opts;
    const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    this.#log = log.child({ conn: id, peer });
    socket.setNoDelay(true);
    socket.on('error', () => undefined); // reported through ByteReader / close
  }

  async serve(): Promise<void> {
    let socket: Duplex = this.#socket;
    let reader = new ByteReader(this.#raw);
    const sender = (s: Duplex) => (b: Buffer): void => {
      if (!s.destroyed) s.write(b);
    };
    const timer = setTimeout(() => {
      this.#opts.logLimiter.warn(this.#log, 'nbd-handshake-timeout', clientAddress(this.#raw), 'handshake timed out; closing');
      this.destroy();
    }, this.#opts.handshakeTimeoutMs);
    const tls = this.#opts.tls;
    const access = this.#opts.access;
    let exportName: string | undefined;
    let upgraded: { up: TlsUpgrade; records: RecordCoalescer } | undefined;
    try {
      const session = await negotiate({
        reader,
        send: sender(socket),
        exports: this.#opts.exports,
        log: this.#log,
        shuttingDown: () => this.#server.shuttingDown,
        ...(tls
          ? {
              tls: {
                mode: tls.mode,
                start: async () => {
                  reader.detach(); // the TLS handshake takes the raw socket's bytes from here
                  const up = await tls.upgrade(this.#raw, this.#log, (m, f) => this.#opts.logLimiter.warn(this.#log, 'nbd-tls-refused', clientAddress(this.#raw), m, f));
                  socket = this.#socket = up.socket;
                  up.socket.on('error', () => undefined); // reported through ByteReader / close
                  const records = new RecordCoalescer(up.socket);
                  upgraded = { up, records };
                  reader = new ByteReader(records as unknown as Duplex);
                  return { reader, send: sender(up.socket), identity: up.identity };
                },
              },
            }
          : {}),
        access: (identity, entry) => access.decide(identity, entry, entry.capabilities().canWrite),
        refused: (m, f) => this.#opts.logLimiter.warn(this.#log, 'nbd-export-refused', clientAddress(this.#raw), m, f),
      });
      clearTimeout(timer);
      if (!session) {
        this.#log.debug('client aborted the handshake');
        socket.end();
        return;
      }
      // What the TLS socket negotiated, for the log; then, if it can, the record stream takes over.
      let tlsInfo: Record<string, unknown> = {};
      if (session.tls && upgraded) {
        const { up, records } = upgraded;
        tlsInfo = { tls: up.socket.getProtocol() ?? true, cipher: up.socket.getCipher()?.name, identity: identityText(session.identity) };
        const stream = await up.offload(() => reader.available === 0 && records.pending === 0, this.#buffers);
        if (stream) {
          reader.detach();
          stream.on('error', () => undefined); // reported through ByteReader / close
          socket = this.#socket = stream;
          reader = new ByteReader(stream);
        }
        tlsInfo.records = stream ? 'rebound' : 'node';
      }
      const exp = session.export;
      exportName = exp.name;
      const log = this.#log.child({ export: exp.name });
      const device = await exp.open({ onUnexpectedError: (err, op) => log.error('unexpected device error', { op, err: errorText(err) }) });
      log.info('client connected', {
        ...(session.name && session.name !== exp.name ? { as: session.name } : {}),
        structured: session.structuredReplies,
        flags: '0x' + session.transmissionFlags.toString(16),
        ...tlsInfo,
      });
      const transmission = new Transmission(socket, reader, session, device, log, {
        maxInflight: this.#opts.maxInflight,
        maxInflightBytes: this.#opts.maxInflightBytes,
        buffers: this.#buffers,
        budget: this.#opts.budget,
      });
      this.#transmission = transmission;
      try {
        await transmission.run();
      } finally {
        await device.close();
      }
      await endGracefully(socket);
    } catch (err) {
      if (err instanceof TlsRefused) {
        this.destroy(); // logged by NbdTls with the reason
      } else if (err instanceof ProtocolViolation) {
        this.#opts.logLimiter.warn(this.#log, 'nbd-protocol-violation', clientAddress(this.#raw), 'protocol violation; closing connection', { reason: err.message });
        await endGracefully(socket);
      } else if (err instanceof StopRequested) {
        await endGracefully(socket);
      } else if (!(err instanceof ConnectionClosed)) {
        this.#log.error('connection failed', { err: errorText(err) });
        socket.destroy();
      }
    } finally {
      clearTimeout(timer);
      if (exportName !== undefined) this.#log.info('client disconnected', { export: exportName });
    }
  }

  /** Finish in-flight requests, then close. */
  async close(): Promise<void> {
    const t = this.#transmission;
    if (t) await t.close();
    await endGracefully(this.#socket);
  }

  destroy(): void {
    this.#socket.destroy();
    this.#raw.destroy();
  }
}

