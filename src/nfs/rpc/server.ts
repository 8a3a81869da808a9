/**
 * RpcServer: TCP listeners (and, for the portmapper, UDP sockets) serving a set of ONC RPC
 * programs. One RpcConnection per TCP socket; a UDP datagram is one call and one reply.
 * close() stops accepting, lets every connection answer what is in flight, then closes it
 * (destroying what is left after the timeout); destroy() cuts everything at once.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { ReboundError } from '../../errors.js';
import type { Logger } from '../../util/log.js';
import { LogLimiter } from '../../util/log-limiter.js';
import { normaliseAddress, RpcConnection, type RpcProgram } from './connection.js';
import { callProgram, datagramReader, decodeCall, encodeResult, type RpcResult } from './messages.js';

export interface RpcServerOptions {
  /** Label for logs and errors ('NFS', 'portmapper'). */
  label: string;
  log: Logger;
  /** Calls processed concurrently per connection. */
  maxInflight?: number;
  /** Record bytes of the calls running on one connection (connection.ts). */
  maxInflightBytes?: number;
  /** Largest record accepted (default MAX_RECORD_BYTES). */
  maxRecordBytes?: number;
  /** Rate limit of refusal log lines (default: one of its own). */
  limiter?: LogLimiter;
}

export class RpcServer {
  readonly #programs = new Map<number, RpcProgram>();
  readonly #listeners: net.Server[] = [];
  readonly #udp: dgram.Socket[] = [];
  readonly #connections = new Set<RpcConnection>();
  readonly #opts: RpcServerOptions;
  readonly #limiter: LogLimiter;
  #closing = false;
  #nextId = 1;

  constructor(opts: RpcServerOptions) {
    this.#opts = opts;
    this.#limiter = opts.limiter ?? new LogLimiter();
  }

  addProgram(p: RpcProgram): void {
    this.#programs.set(p.prog, p);
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Listens on TCP (port 0 picks a free port); resolves with the bound address. */
  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer({ noDelay: true }, (socket) => this.handleSocket(socket));
      srv.once('error', (err) =>
        reject(new ReboundError('ERR_LISTEN_FAILED', `cannot listen for ${this.#opts.label} on ${host}:${port}: ${err.message}`, { cause: err })),
      );
      srv.listen({ host, port }, () => {
        srv.on('error', (err) => this.#opts.log.error(`${this.#opts.label} listener error`, { err: err.message }));
        this.#listeners.push(srv);
        const a = srv.address() as net.AddressInfo;
        this.#opts.log.info(`${this.#opts.label} listening`, { address: `${a.address}:${a.port}` });
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /**
   * Listens on UDP (one call per datagram, no record marks). Only for small programs such as the
   * portmapper (`rpcinfo -p` asks it over UDP); replies larger than a datagram are not sent.
   */
  listenUdp(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
      sock.once('error', (err) =>
        reject(new ReboundError('ERR_LISTEN_FAILED', `cannot listen for ${this.#opts.label} on udp ${host}:${port}: ${err.message}`, { cause: err })),
      );
      sock.on('message', (msg, rinfo) => this.#onDatagram(sock, msg, rinfo));
      sock.bind({ address: host, port }, () => {
        sock.on('error', (err) => this.#opts.log.error(`${this.#opts.label} UDP error`, { err: err.message }));
        this.#udp.push(sock);
        const a = sock.address();
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  #onDatagram(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.#closing) return;
    const rec = datagramReader(msg);
    if (!rec) return;
    const d = decodeCall(rec, { address: normaliseAddress(rinfo.address), port: rinfo.port });
    const reply = (xid: number, r: RpcResult): void => {
      const { head, body } = encodeResult(xid, r);
      const out = Buffer.concat([head.subarray(4), ...body]);
      if (out.length <= 65507 && !this.#closing) sock.send(out, rinfo.port, rinfo.address);
    };
    if (d.kind === 'reject') {
      if (d.xid !== undefined) reply(d.xid, d.result);
      return;
    }
    const r = callProgram(this.#programs, { ...d.call, local: normaliseAddress(sock.address().address) }, this.#opts.log);
    if (r instanceof Promise) void r.then((x) => reply(d.call.xid, x), () => reply(d.call.xid, { kind: 'system-err' }));
    else reply(d.call.xid, r);
  }

  handleSocket(socket: net.Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    const log = this.#opts.log.child({ conn: this.#nextId++, peer: `${socket.remoteAddress}:${socket.remotePort}` });
    const conn = new RpcConnection(socket, this.#programs, log, {
      maxInflight: this.#opts.maxInflight ?? 128,
      maxInflightBytes: this.#opts.maxInflightBytes,
      maxRecordBytes: this.#opts.maxRecordBytes,
      limiter: this.#limiter,
    });
    this.#connections.add(conn);
    log.debug('client connected');
    void conn.closed.then(() => {
      this.#connections.delete(conn);
      log.debug('client disconnected');
    });
  }

  async close(timeoutMs = 10_000): Promise<void> {
    this.#closing = true;
    const closing = this.#listeners.map((l) => new Promise<void>((r) => l.close(() => r())));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...this.#connections].map((c) => c.close())),
      new Promise<void>((r) => (timer = setTimeout(r, timeoutMs))),
    ]);
    clearTimeout(timer);
    for (const c of this.#connections) c.destroy();
    for (const u of this.#udp.splice(0)) u.close();
    await Promise.all(closing);
  }

  destroy(): void {
    this.#closing = true;
    for (const l of this.#listeners) l.close();
    for (const c of this.#connections) c.destroy();
    for (const u of this.#udp.splice(0)) u.close();
  }
}
