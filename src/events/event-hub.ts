/**
 * EventHub: the daemon's live events (sessions, jobs, catalog) for the dashboard's stream
 * (GET /v1/events, api/events-routes.ts).
 *
 * Design notes:
 *  - Publish is synchronous fan-out to subscribers; the hub buffers nothing per subscriber. The
 *    per-client bound lives in the transport (events-routes.ts drops a client whose socket holds
 *    more than its limit unsent), so a slow client costs at most that bound, never an unbounded queue.
 *  - Notable events (created/removed, state changes, catalog changes) are also kept in a ring of the
 *    last RECENT_MAX, replayed to a new subscriber: the dashboard's log has a history on first load.
 *    The per-second samples are not kept (they are superseded every second).
 *  - `onActive(true/false)` tells the sampler when the first subscriber came and the last one left,
 *    so a daemon nobody watches samples nothing.
 *  - Events carry the VM they are about (when there is one); the route filters them by the token's
 *    VM patterns like the list routes do.
 */

export interface HubEvent {
  /** Increasing per hub; the SSE id. */
  id: number;
  type: string;
  at: string;
  /** The VM the event is about, for tokens limited to VM patterns (none: about no one VM). */
  vm?: string;
  data: Record<string, unknown>;
}

export type EventListener = (e: HubEvent) => void;

/** Notable events kept for replay. */
export const RECENT_MAX = 200;

export class EventHub {
  readonly #subs = new Set<EventListener>();
  readonly #recent: HubEvent[] = [];
  readonly #onActive: ((active: boolean) => void) | undefined;
  #next = 1;

  constructor(opts: { onActive?: (active: boolean) => void } = {}) {
    this.#onActive = opts.onActive;
  }

  /** Sends an event to every subscriber; `keep` puts it in the replay ring too. */
  publish(type: string, data: Record<string, unknown>, opts: { vm?: string; keep?: boolean } = {}): HubEvent {
    const e: HubEvent = { id: this.#next++, type, at: new Date().toISOString(), ...(opts.vm !== undefined ? { vm: opts.vm } : {}), data };
    if (opts.keep) {
      this.#recent.push(e);
      if (this.#recent.length > RECENT_MAX) this.#recent.shift();
    }
    for (const s of [...this.#subs]) {
      try {
        s(e);
      } catch {
        // A subscriber's failure is its own (the route drops its client); the others still get the event.
      }
    }
    return e;
  }

  /** Adds a listener; returns its removal (idempotent). */
  subscribe(listener: EventListener): () => void {
    this.#subs.add(listener);
    if (this.#subs.size === 1) this.#onActive?.(true);
    return () => {
      if (this.#subs.delete(listener) && this.#subs.size === 0) this.#onActive?.(false);
    };
  }

  /** The notable events kept, oldest first. */
  recent(): HubEvent[] {
    return [...this.#recent];
  }

  get subscribers(): number {
    return this.#subs.size;
  }
}
