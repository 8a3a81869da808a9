/**
 * What the TCP front ends (NBD, iSCSI) share about their connections: who a client is, how many
 * connections it and everyone together may hold, and how a connection is closed politely.
 *
 *  - A client is its remote address: IPv4-mapped IPv6 addresses count as their IPv4 address, and
 *    every Unix-socket client is the one client `unix`.
 *  - ConnectionLimits admits a new connection or names the limit it is over; an admitted one is
 *    counted until its release() (called once, when the connection has ended).
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';

/** The client a socket belongs to, for per-client limits and log lines. */
export function clientAddress(socket: net.Socket): string {
  const a = socket.remoteAddress;
  if (!a) return 'unix';
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

export interface ConnectionLimitOptions {
  /** Connections of all clients together. */
  maxConnections: number;
  /** Connections of one client address. */
  maxConnectionsPerClient: number;
}

export type Admission = { admitted: true; release(): void } | { admitted: false; over: 'total' | 'client'; limit: number };

export class ConnectionLimits {
  readonly #opts: ConnectionLimitOptions;
  readonly #perClient = new Map<string, number>();
  #total = 0;

  constructor(opts: ConnectionLimitOptions) {
    this.#opts = opts;
  }

  /** Connections admitted and not yet released. */
  get size(): number {
    return this.#total;
  }

  /** Admits one more connection of `client`, or says which limit it is over. */
  admit(client: string): Admission {
    const { maxConnections, maxConnectionsPerClient } = this.#opts;
    if (this.#total >= maxConnections) return { admitted: false, over: 'total', limit: maxConnections };
    const fromClient = this.#perClient.get(client) ?? 0;
    if (fromClient >= maxConnectionsPerClient) return { admitted: false, over: 'client', limit: maxConnectionsPerClient };
    this.#total++;
    this.#perClient.set(client, fromClient + 1);
    let released = false;
    return {
      admitted: true,
      release: () => {
        if (released) return;
        released = true;
        this.#total--;
        const n = (this.#perClient.get(client) ?? 1) - 1;
        if (n > 0) this.#perClient.set(client, n);
        else this.#perClient.delete(client);
      },
    };
  }
}

/** Sends what is queued, then closes both directions (a peer that keeps its side open is cut after 2 s). */
export function endGracefully(socket: Duplex): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    socket.once('close', () => resolve());
    socket.end(() => socket.destroy());
    setTimeout(() => socket.destroy(), 2000).unref();
  });
}
