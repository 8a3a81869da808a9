/**
 * GET /v1/events over a real socket: bearer auth, replay then live events, VM-limited tokens,
 * heartbeats, a stalled client dropped at the buffer bound, shutdown ending the streams.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApi } from '../../../src/api/server.js';
import { registerEventRoutes } from '../../../src/api/events-routes.js';
import { installAuth } from '../../../src/api/auth.js';
import { DaemonEvents } from '../../../src/events/daemon-events.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { silentLogger } from '../../../src/util/log.js';
import { testAuth, type TestAuth } from '../../helpers/api-auth.js';
import Fastify from 'fastify';

interface Frame { id?: string; event?: string; data?: string; comment?: string }

/** Reads SSE frames from a fetch() body, as the dashboard does. */
class FrameReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #decoder = new TextDecoder();
  #buf = '';
  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.getReader();
  }
  async next(): Promise<Frame | null> {
    for (;;) {
      const i = this.#buf.indexOf('\n\n');
      if (i >= 0) {
        const block = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 2);
        const f: Frame = {};
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) f.comment = line.slice(1).trim();
          else {
            const [k, ...v] = line.split(': ');
            (f as Record<string, string>)[k!] = v.join(': ');
          }
        }
        return f;
      }
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#buf += this.#decoder.decode(value, { stream: true });
    }
  }
  /** The next frame with an event (skipping retry/comment frames), bounded by count. */
  async event(type?: string): Promise<Frame> {
    for (let i = 0; i < 1000; i++) {
      const f = await this.next();
      if (f === null) throw new Error('stream ended');
      if (f.event && (!type || f.event === type)) return f;
    }
    throw new Error(`no ${type ?? ''} event in 1000 frames`);
  }
  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

let app: FastifyInstance;
let base: string;
let catalog: Catalog;
let t: TestAuth;
let limitedToken: string;
let mainEvents: DaemonEvents;

beforeAll(async () => {
  t = await testAuth();
  limitedToken = (await t.tokens.create({ name: 'vm-a only', role: 'viewer', vms: ['vm-a'] })).token;
  catalog = new Catalog();
  mainEvents = new DaemonEvents({ catalog });
  app = createApi({
    events: mainEvents,
    catalog,
    log: silentLogger,
    version: '9.9.9',
    startedAt: new Date(),
    endpoints: () => ({ nbd: [], nbdSocket: [], http: undefined }),
    config: () => ({}),
    auth: t.auth,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const a = app.server.address() as net.AddressInfo;
  base = `http://127.0.0.1:${a.port}`;
});
afterAll(async () => {
  // fetch() (undici) leaves sockets that never carried a request; the server would wait for its
  // request timeout. Every stream's own socket is closed by then (the tests check the hub).
  const closing = app.close();
  app.server.closeAllConnections();
  await closing;
  mainEvents.close();
  await catalog.close();
});

function publish(name: string): void {
  const device = new MemoryDevice(1 << 16);
  catalog.publish({ name, kind: 'adhoc', disk: name, size: device.size, capabilities: device.capabilities(), publish: ['nbd'], description: 'memory', source: 'memory', device });
}

describe('GET /v1/events', () => {
  it('needs a token in the Authorization header', async () => {
    const r = await fetch(`${base}/v1/events`);
    expect(r.status).toBe(401);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('ERR_UNAUTHENTICATED');
  });

  it('replays notable events, then streams live ones', async () => {
    publish('before');
    const r = await fetch(`${base}/v1/events`, { headers: t.headers('viewer') });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const frames = new FrameReader(r.body!);
    const replay = await frames.event('catalog');
    expect(JSON.parse(replay.data!)).toMatchObject({ type: 'catalog', data: { change: 'added', name: 'before' } });
    publish('after');
    const live = await frames.event('catalog');
    const e = JSON.parse(live.data!);
    expect(e.data).toMatchObject({ change: 'added', name: 'after' });
    expect(Number(live.id)).toBe(e.id);
    expect(e.id).toBeGreaterThan(JSON.parse(replay.data!).id);
    await frames.cancel();
    await catalog.unpublish('before');
    await catalog.unpublish('after');
  });

  it('a token limited to VM patterns gets only its VMs\' events', async () => {
    const r = await fetch(`${base}/v1/events`, { headers: { authorization: `Bearer ${limitedToken}` } });
    const frames = new FrameReader(r.body!);
    publish('adhoc-hidden'); // about no VM: not for this token
    await catalog.unpublish('adhoc-hidden');
    // No sessions in this API: publish through its hub directly.
    const hub = mainEvents.hub;
    hub.publish('probe', { n: 1 }, { vm: 'vm-b', keep: false });
    hub.publish('probe', { n: 2 }, { keep: false });
    hub.publish('probe', { n: 3 }, { vm: 'vm-a', keep: false });
    // Events go out in order: the one about vm-a coming first proves the others were filtered.
    const f = await frames.event();
    expect(JSON.parse(f.data!)).toMatchObject({ type: 'probe', vm: 'vm-a', data: { n: 3 } });
    await frames.cancel();
  });
});

/** A second API with its own hub, small bounds and fast heartbeats. */
describe('event stream bounds', () => {
  let small: FastifyInstance;
  let smallBase: string;
  let events: DaemonEvents;
  let cat: Catalog;
  beforeAll(async () => {
    cat = new Catalog();
    events = new DaemonEvents({ catalog: cat });
    small = Fastify();
    installAuth(small, t.auth, silentLogger);
    registerEventRoutes(small, { events, heartbeatMs: 50, maxBuffered: 64 * 1024 });
    await small.listen({ host: '127.0.0.1', port: 0 });
    smallBase = `http://127.0.0.1:${(small.server.address() as net.AddressInfo).port}`;
  });
  afterAll(async () => {
    events.close();
    await cat.close();
  });

  it('sends heartbeat comments', async () => {
    const r = await fetch(`${smallBase}/v1/events`, { headers: t.headers('viewer') });
    const frames = new FrameReader(r.body!);
    let f: Frame | null = null;
    for (let i = 0; i < 10 && !f?.comment; i++) f = await frames.next();
    expect(f?.comment).toBe('keep-alive');
    await frames.cancel();
  });

  it('drops a client that stops reading, and forgets one that disconnects', async () => {
    const port = (small.server.address() as net.AddressInfo).port;
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write(`GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${t.token.viewer}\r\n\r\n`);
    sock.pause(); // never reads: the kernel buffers fill, then the server's
    for (let i = 0; i < 500 && events.hub.subscribers === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(events.hub.subscribers).toBe(1);
    const big = 'x'.repeat(64 * 1024);
    let sent = 0;
    for (; sent < 10_000 && events.hub.subscribers > 0; sent++) {
      events.hub.publish('big', { big });
      if (sent % 16 === 0) await new Promise((r) => setImmediate(r));
    }
    expect(events.hub.subscribers).toBe(0);
    expect(sent).toBeGreaterThan(1); // the socket took some before the bound
    sock.destroy();

    const r = await fetch(`${smallBase}/v1/events`, { headers: t.headers('viewer') });
    const frames = new FrameReader(r.body!);
    await frames.next();
    expect(events.hub.subscribers).toBe(1);
    await frames.cancel();
    for (let i = 0; i < 500 && events.hub.subscribers > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(events.hub.subscribers).toBe(0);
  });

  it('closing the server ends open streams', async () => {
    const r = await fetch(`${smallBase}/v1/events`, { headers: t.headers('viewer') });
    const frames = new FrameReader(r.body!);
    await frames.next();
    await small.close();
    for (let i = 0; i < 1000; i++) if ((await frames.next()) === null) break;
    expect(events.hub.subscribers).toBe(0);
  });
});
