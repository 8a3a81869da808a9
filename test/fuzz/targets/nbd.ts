/**
 * Fuzz target `nbd`: an in-process NbdServer on a Unix socket (the server the daemon runs, over a
 * catalog with one 1 MiB memory export, `fuzz`). Each input is one connection fed with
 * structure-aware frames: client flags, then either a valid handshake (STRUCTURED_REPLY,
 * SET_META_CONTEXT, GO) or random options (IHAVEOPT or random magic, known or random option codes,
 * GO/INFO/META_CONTEXT data with random names, info lists and declared lengths that lie), then
 * transmission requests (request magic or random, random flags and command types, offsets and
 * lengths in range or not, write payloads whole, short or missing); the byte stream may be cut
 * anywhere. The client then half-closes (at once, or once the server has gone quiet) and drains.
 *
 * Oracle: after each input the server closes the connection within 3 s of the client's EOF (no
 * hang); every 50 inputs and at the end a fresh client completes the handshake and READs 64 KiB
 * at two offsets with the bytes the device holds, and no connection is left open (no leak).
 *
 * Daemon mode (test/fuzz/daemon.ts): the same inputs go to a `rebound serve` process with a 1 MiB
 * memory export on a Unix socket; the probe checks the READs succeed (the fuzzed WRITEs change the
 * bytes, which the in-process mode reads from the device itself) and counts the daemon's sockets
 * for leaks; the summary has the daemon's RSS.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { encodeGoData, encodeMetaContextQuery, encodeOption } from '../../../src/nbd/messages.js';
import { Cmd, IHAVEOPT, Opt, REQUEST_MAGIC } from '../../../src/nbd/protocol.js';
import { NbdServer } from '../../../src/nbd/server.js';
import { silentLogger } from '../../../src/util/log.js';
import { RawNbdClient } from '../../helpers/raw-nbd.js';
import { patternBuffer } from '../../helpers/images.js';
import { OracleFailure, rarely, u32, type FuzzTarget, feedConnection } from '../lib.js';
import { daemonMode, FuzzDaemon } from '../daemon.js';

const EXPORT = 'fuzz';
const SIZE = 1 << 20;

const u16 = fc.integer({ min: 0, max: 0xffff });
const name = fc.oneof(fc.constant(EXPORT), fc.constant(''), fc.string({ maxLength: 20 }), fc.constant('x'.repeat(5000)));

const optionData = fc.oneof(
  fc.tuple(name, fc.array(fc.oneof(fc.constantFrom(0, 1, 2, 3), u16), { maxLength: 6 })).map(([n, infos]) => encodeGoData(n, infos)),
  fc.tuple(name, fc.array(fc.oneof(fc.constantFrom('base:allocation', 'base:', 'qemu:dirty-bitmap:x', ''), fc.string({ maxLength: 20 })), { maxLength: 4 })).map(([n, q]) =>
    encodeMetaContextQuery(n, q),
  ),
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  fc.constant(Buffer.alloc(0)),
);

const optionFrame = fc
  .record({
    magic: fc.oneof({ weight: 9, arbitrary: fc.constant(IHAVEOPT) }, { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
    option: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 11 }) }, { weight: 1, arbitrary: u32() }),
    data: optionData,
    lie: rarely(fc.oneof(fc.integer({ min: -8, max: 8 }), u32()), 6),
  })
  .map(({ magic, option, data, lie }) => {
    const b = encodeOption(option, data);
    b.writeBigUInt64BE(magic, 0);
    if (lie !== null) b.writeUInt32BE((lie > 8 ? lie : Math.max(0, data.length + lie)) >>> 0, 12);
    return b;
  });

const offset = fc.oneof(
  { weight: 6, arbitrary: fc.nat({ max: SIZE / 512 - 1 }).map((s) => s * 512) },
  { weight: 1, arbitrary: fc.nat({ max: SIZE + 4096 }) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
);
const length = fc.oneof({ weight: 6, arbitrary: fc.nat({ max: 128 }).map((n) => n * 512) }, { weight: 1, arbitrary: fc.nat({ max: 70_000 }) }, { weight: 1, arbitrary: u32() });

const requestFrame = fc
  .record({
    magic: fc.oneof({ weight: 12, arbitrary: fc.constant(REQUEST_MAGIC) }, { weight: 1, arbitrary: u32() }),
    flags: fc.oneof(fc.nat({ max: 31 }), u16),
    type: fc.oneof({ weight: 10, arbitrary: fc.constantFrom(Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.TRIM, Cmd.CACHE, Cmd.WRITE_ZEROES, Cmd.BLOCK_STATUS) }, { weight: 1, arbitrary: fc.constant(Cmd.DISC) }, { weight: 1, arbitrary: u16 }),
    cookie: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    offset,
    length,
    payload: fc.constantFrom('whole', 'whole', 'whole', 'short', 'none'),
  })
  .map((r) => {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(r.magic, 0);
    h.writeUInt16BE(r.flags, 4);
    h.writeUInt16BE(r.type, 6);
    h.writeBigUInt64BE(r.cookie, 8);
    h.writeBigUInt64BE(BigInt(r.offset), 16);
    h.writeUInt32BE(r.length >>> 0, 24);
    if (r.type !== Cmd.WRITE || r.payload === 'none' || r.length > 1 << 20) return h;
    const n = r.payload === 'whole' ? r.length : Math.floor(r.length / 2);
    return Buffer.concat([h, Buffer.alloc(n, 0xa5)]);
  });

interface Input {
  bytes: Buffer;
  /** Half-close at once (the server sees EOF with the frames) or once the server has gone quiet. */
  linger: boolean;
}

const validHandshake = fc.record({ structured: fc.boolean(), meta: fc.boolean(), oldStyle: fc.boolean() }).map(({ structured, meta, oldStyle }) => {
  const parts: Buffer[] = [];
  if (structured) parts.push(encodeOption(Opt.STRUCTURED_REPLY));
  if (meta) parts.push(encodeOption(Opt.SET_META_CONTEXT, encodeMetaContextQuery(EXPORT, ['base:allocation'])));
  parts.push(oldStyle ? encodeOption(Opt.EXPORT_NAME, Buffer.from(EXPORT)) : encodeOption(Opt.GO, encodeGoData(EXPORT, [3])));
  return Buffer.concat(parts);
});

const input: fc.Arbitrary<Input> = fc
  .record({
    clientFlags: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(1, 3) }, { weight: 1, arbitrary: u32() }),
    // Most inputs reach transmission (a valid handshake, possibly after random options); the rest
    // stay in option haggling.
    options: fc.oneof(
      { weight: 3, arbitrary: validHandshake },
      { weight: 2, arbitrary: fc.array(optionFrame, { maxLength: 6 }).map((f) => Buffer.concat(f)) },
      { weight: 2, arbitrary: fc.tuple(fc.array(optionFrame, { maxLength: 3 }), validHandshake).map(([f, v]) => Buffer.concat([...f, v])) },
    ),
    requests: fc.array(requestFrame, { minLength: 1, maxLength: 8 }),
    cut: rarely(fc.nat(), 8),
    linger: fc.boolean(),
  })
  .map(({ clientFlags, options, requests, cut, linger }) => {
    const f = Buffer.alloc(4);
    f.writeUInt32BE(clientFlags >>> 0);
    const bytes = Buffer.concat([f, options, ...requests]);
    return { bytes: cut === null ? bytes : bytes.subarray(0, cut % (bytes.length + 1)), linger };
  });

interface Ctx {
  dir: string;
  socket: string;
  /** In-process mode. */
  server?: NbdServer;
  catalog?: Catalog;
  device?: MemoryDevice;
  /** Daemon mode. */
  daemon?: FuzzDaemon;
}


export function nbdTarget(): FuzzTarget<Input, Ctx> {
  return {
    name: 'nbd',
    oracle: 'the server closes each fuzzed connection within 3 s of the client EOF; every 50 inputs a fresh client handshakes and READs the device bytes; no connection leaks',
    arbitrary: input,
    timeoutMs: 5000,
    setup: async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-fuzz-nbd-'));
      if (daemonMode) {
        const socket = path.join(dir, 'nbd.sock');
        const daemon = await FuzzDaemon.start([
          '--data', path.join(dir, 'data'), '--nbd', '127.0.0.1:0', '--nbd-socket', socket,
          '--export', `${EXPORT}=memory:${SIZE / 1024}K`, '--nbd-handshake-timeout', '10000',
        ]);
        return { dir, socket, daemon };
      }
      const device = new MemoryDevice(SIZE);
      await device.write(patternBuffer(0, SIZE), 0);
      const catalog = new Catalog(silentLogger);
      catalog.publish({ name: EXPORT, kind: 'adhoc', disk: EXPORT, size: SIZE, capabilities: device.capabilities(), publish: ['nbd'], source: 'memory', device });
      const server = new NbdServer({ exports: catalog.view('nbd'), log: silentLogger, handshakeTimeoutMs: 10_000 });
      const socket = path.join(dir, 'nbd.sock');
      await server.listenUnix(socket);
      return { dir, socket, server, catalog, device };
    },
    check: async ({ bytes, linger }, ctx) => feedConnection(ctx.socket, bytes, linger, 3000),
    liveness: {
      every: 50,
      measure: async (ctx, done) => ctx.daemon?.sample(done),
      check: async (ctx, done) => {
        const c = await RawNbdClient.connect({ path: ctx.socket });
        try {
          await c.handshake(EXPORT, { structured: false });
          for (const off of [0, SIZE - 65536]) {
            c.request(Cmd.READ, { cookie: 7n, offset: off, length: 65536 });
            const r = await c.reply(65536, 3000);
            if (ctx.daemon) {
              if (r.error !== 0 || r.payload.length !== 65536) throw new OracleFailure(`liveness READ at ${off}: error ${r.error}, ${r.payload.length} bytes`);
              continue;
            }
            const want = Buffer.alloc(65536);
            await ctx.device!.read(want, off);
            if (r.error !== 0 || !r.payload.equals(want)) throw new OracleFailure(`liveness READ at ${off}: error ${r.error}, data ${r.payload.equals(want) ? 'right' : 'wrong'}`);
          }
        } finally {
          c.close();
        }
        if (ctx.daemon) {
          if (ctx.daemon.proc.child.exitCode !== null) throw new OracleFailure(`the daemon exited (${ctx.daemon.proc.child.exitCode}): ${ctx.daemon.proc.stderr().slice(-2000)}`);
          const left = await ctx.daemon.leftoverConnections();
          if (left > 0) throw new OracleFailure(`${left} connection(s) still open in the daemon after every client left`);
          return;
        }
        const server = ctx.server!;
        const deadline = Date.now() + 3000;
        while (server.connectionCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        if (server.connectionCount > 0) throw new OracleFailure(`${server.connectionCount} connection(s) still open after every client left`);
      },
    },
    report: (ctx) => ctx.daemon?.report() ?? {},
    teardown: async (ctx) => {
      await ctx.daemon?.stop();
      await ctx.server?.close(2000);
      await ctx.catalog?.close();
      fs.rmSync(ctx.dir, { recursive: true, force: true });
    },
  };
}
