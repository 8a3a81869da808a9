/**
 * GET /v1/events: the daemon's live events as server-sent events (text/event-stream), for the
 * dashboard. Each event is `id: N`, `event: TYPE`, `data: {"id","type","at","vm"?,"data"}`; the
 * notable events kept by the hub (events/event-hub.ts) are replayed first, then come the live
 * ones, with a comment line (`: keep-alive`) every HEARTBEAT_MS so proxies and the client can tell
 * a quiet stream from a dead one.
 *
 * Authentication is the API's own (Authorization: Bearer): browsers cannot set headers on
 * EventSource, so the dashboard reads the stream with fetch() and a ReadableStream reader; tokens
 * never go into URLs or cookies (docs/security.md). A token limited to VM patterns gets only the
 * events about its VMs.
 *
 * Back-pressure: the socket's unsent bytes are the client's buffer. Past MAX_BUFFERED the client
 * is dropped (the connection closed; the browser reconnects and reloads the state), so a stalled
 * client cannot make the daemon hold an ever-growing queue. Daemon shutdown ends every stream
 * (preClose) so the server can close.
 */
import type { FastifyInstance } from 'fastify';
import type { DaemonEvents } from '../events/daemon-events.js';
import type { HubEvent } from '../events/event-hub.js';
import { tokenSees } from './auth.js';
import type { Logger } from '../util/log.js';

export const HEARTBEAT_MS = 15_000;
/** Unsent bytes a client may hold before it is dropped. */
export const MAX_BUFFERED = 512 * 1024;

export interface EventRouteContext {
  events: DaemonEvents;
  heartbeatMs?: number;
  maxBuffered?: number;
  log?: Logger;
}

export function registerEventRoutes(app: FastifyInstance, ctx: EventRouteContext): void {
  const streams = new Set<() => void>();
  const heartbeatMs = ctx.heartbeatMs ?? HEARTBEAT_MS;
  const maxBuffered = ctx.maxBuffered ?? MAX_BUFFERED;
  app.addHook('preClose', async () => {
    for (const end of [...streams]) end();
  });

  app.get('/v1/events', { config: { permission: 'read' } }, (req, reply) => {
    const hub = ctx.events.hub;
    const limited = Boolean(req.token?.vms?.length);
    const sees = (e: HubEvent): boolean => !limited || (e.vm !== undefined && tokenSees(req, e.vm));
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'x-accel-buffering': 'no',
      // A stream's connection is never reused: when it ends, it closes (shutdown need not wait for it).
      connection: 'close',
    });
    res.write('retry: 3000\n\n');
    let open = true;
    let unsubscribe = (): void => undefined;
    let heartbeat: NodeJS.Timeout | undefined;
    const stop = (): boolean => {
      if (!open) return false;
      open = false;
      unsubscribe();
      clearInterval(heartbeat);
      streams.delete(end);
      return true;
    };
    const end = (): void => {
      if (stop()) res.end(() => res.destroy());
    };
    const write = (text: string): void => {
      if (!open) return;
      if (res.writableLength > maxBuffered) {
        ctx.log?.warn('event stream client dropped: it reads slower than events come', { client: req.ip, unsentBytes: res.writableLength });
        if (stop()) res.destroy();
        return;
      }
      res.write(text);
    };
    const send = (e: HubEvent): void => {
      if (sees(e)) write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    for (const e of hub.recent()) send(e);
    if (!open) return;
    unsubscribe = hub.subscribe(send);
    heartbeat = setInterval(() => write(': keep-alive\n\n'), heartbeatMs);
    streams.add(end);
    res.on('close', end);
    req.raw.on('close', end);
  });
}
