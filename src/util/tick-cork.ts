/**
 * TickCork: replies that finish in the same tick leave in one writev. The first write of a tick
 * corks the socket; process.nextTick (after the microtasks that completed the requests) uncorks
 * it. Used by every front end that answers requests on a socket (NBD, NFS, iSCSI).
 */
import type { Writable } from 'node:stream';

export class TickCork {
  readonly #socket: Writable;
  #corked = false;

  constructor(socket: Writable) {
    this.#socket = socket;
  }

  /** Corks the socket until the next tick, unless it already is. Call before each write. */
  hold(): void {
    if (this.#corked) return;
    this.#corked = true;
    this.#socket.cork();
    process.nextTick(() => {
      this.#corked = false;
      this.#socket.uncork();
    });
  }
}
