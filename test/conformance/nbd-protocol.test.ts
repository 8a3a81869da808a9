/**
 * NBD protocol conformance with raw frames: valid edge cases and malformed input. Each case shows
 * the server's answer and that the daemon (and usually the same connection) keeps serving.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { FaultLayer } from '../../src/blockdev/layers/fault.js';
import { encodeGoData, encodeMetaContextQuery, encodeOption, encodeRequest } from '../../src/nbd/messages.js';
import { ChunkType, Cmd, CmdFlag, NbdErrno, Opt, Rep, TFlag } from '../../src/nbd/protocol.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { startNbd, type NbdFixture } from '../helpers/nbd-fixture.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';

const SIZE = 16 * 1024 * 1024;
let fx: NbdFixture;
let dir: string;
let image: Buffer;
let memory: MemoryDevice;
let slow: FaultLayer;

beforeAll(async () => {
  dir = tempDir();
  const file = path.join(dir, 'base.img');
  image = makeImage(file, standardLayout(SIZE));
  memory = new MemoryDevice(SIZE);
  await memory.write(Buffer.alloc(65536, 0x11), 0);
  await memory.write(Buffer.alloc(65536, 0x22), 4 * 65536);
  slow = new FaultLayer(new MemoryDevice(SIZE), {});
  fx = await startNbd([
    { name: 'ro', device: await RawFileDevice.open(file), description: 'read-only image' },
    { name: 'mem', device: memory, description: 'memory' },
    { name: 'slow', device: slow },
  ]);
});

afterAll(async () => {
  await fx.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const connect = (): Promise<RawNbdClient> => RawNbdClient.connect({ path: fx.socket });

/** Proves the daemon still serves: a fresh connection reads the first bytes of 'ro'. */
async function daemonAlive(): Promise<void> {
  const c = await connect();
  await c.handshake('ro');
  c.request(Cmd.READ, { cookie: 99n, offset: 0, length: 512 });
  const [r] = await c.chunks();
  expect(r!.type).toBe(ChunkType.OFFSET_DATA);
  expect(r!.payload.subarray(8).equals(image.subarray(0, 512))).toBe(true);
  c.close();
}

describe('handshake', () => {
  it('greets with NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES', async () => {
    const c = await connect();
    const g = await c.read(18);
    expect(g.toString('latin1', 0, 8)).toBe('NBDMAGIC');
    expect(g.toString('latin1', 8, 16)).toBe('IHAVEOPT');
    expect(g.readUInt16BE(16)).toBe(3);
    c.close();
  });

  it('drops a client that sets unknown client flags', async () => {
    const c = await connect();
    await c.greet(0x80000003);
    expect(await c.closedWithin()).toBe(true);
    await daemonAlive();
  });

  it('answers unknown and unsupported options with ERR_UNSUP (STARTTLS without TLS: ERR_POLICY) and keeps haggling', async () => {
    const c = await connect();
    await c.greet();
    for (const opt of [0x1234, Opt.EXTENDED_HEADERS, Opt.PEEK_EXPORT]) {
      const replies = await c.option(opt, Buffer.from('some data'));
      expect(replies).toHaveLength(1);
      expect(replies[0]!.type).toBe(Rep.ERR_UNSUP);
      expect(replies[0]!.option).toBe(opt);
    }
    // STARTTLS on a server without TLS: ERR_POLICY, as nbdkit (ERR_INVALID when it carries data).
    expect((await c.option(Opt.STARTTLS)).map((r) => r.type)).toEqual([Rep.ERR_POLICY]);
    expect((await c.option(Opt.STARTTLS, Buffer.from('x'))).map((r) => r.type)).toEqual([Rep.ERR_INVALID]);
    const go = await c.option(Opt.GO, encodeGoData('ro'));
    expect(go[go.length - 1]!.type).toBe(Rep.ACK);
    c.close();
  });

  it('lists exports with descriptions, and refuses LIST with data', async () => {
    const c = await connect();
    await c.greet();
    const bad = await c.option(Opt.LIST, Buffer.from('x'));
    expect(bad.map((r) => r.type)).toEqual([Rep.ERR_INVALID]);
    const list = await c.option(Opt.LIST);
    const servers = list.filter((r) => r.type === Rep.SERVER).map((r) => {
      const n = r.data.readUInt32BE(0);
      return [r.data.toString('utf8', 4, 4 + n), r.data.toString('utf8', 4 + n)];
    });
    expect(servers).toEqual([
      ['ro', 'read-only image'],
      ['mem', 'memory'],
      ['slow', ''],
    ]);
    expect(list[list.length - 1]!.type).toBe(Rep.ACK);
    c.close();
  });

  it('answers GO for an unknown export with ERR_UNKNOWN and a short message, then accepts a good GO', async () => {
    const c = await connect();
    await c.greet();
    const r = await c.option(Opt.GO, encodeGoData('no-such-export'));
    expect(r.map((x) => x.type)).toEqual([Rep.ERR_UNKNOWN]);
    expect(r[0]!.data.toString()).toContain('no-such-export');
    const malformed = await c.option(Opt.GO, Buffer.from([0, 0, 0, 50, 1, 2]));
    expect(malformed.map((x) => x.type)).toEqual([Rep.ERR_INVALID]);
    const ok = await c.option(Opt.GO, encodeGoData('mem'));
    expect(ok[ok.length - 1]!.type).toBe(Rep.ACK);
    c.close();
  });

  it('INFO reports export, name, description and block size, and leaves haggling open', async () => {
    const c = await connect();
    await c.greet();
    const r = await c.option(Opt.INFO, encodeGoData('', [1, 2, 3]));
    const infos = new Map(r.filter((x) => x.type === Rep.INFO).map((x) => [x.data.readUInt16BE(0), x.data.subarray(2)]));
    expect(Number(infos.get(0)!.readBigUInt64BE(0))).toBe(SIZE);
    const flags = infos.get(0)!.readUInt16BE(8);
    expect(flags & TFlag.HAS_FLAGS).toBeTruthy();
    expect(flags & TFlag.READ_ONLY).toBeTruthy();
    expect(flags & (TFlag.SEND_TRIM | TFlag.SEND_WRITE_ZEROES)).toBe(0);
    expect(infos.get(1)!.toString()).toBe('ro'); // '' is the default export
    expect(infos.get(2)!.toString()).toBe('read-only image');
    const bs = infos.get(3)!;
    expect([bs.readUInt32BE(0), bs.readUInt32BE(4), bs.readUInt32BE(8)]).toEqual([1, 4096, 64 * 1024 * 1024]);
    expect(r[r.length - 1]!.type).toBe(Rep.ACK);
    // Still in option haggling: a GO works now.
    const go = await c.option(Opt.GO, encodeGoData('mem', [3]));
    const exp = go.find((x) => x.type === Rep.INFO && x.data.readUInt16BE(0) === 0)!;
    const memFlags = exp.data.readUInt16BE(10);
    expect(memFlags & TFlag.READ_ONLY).toBe(0);
    expect(memFlags & TFlag.SEND_FLUSH && memFlags & TFlag.SEND_FUA && memFlags & TFlag.SEND_TRIM).toBeTruthy();
    expect(memFlags & TFlag.SEND_WRITE_ZEROES && memFlags & TFlag.SEND_FAST_ZERO && memFlags & TFlag.CAN_MULTI_CONN).toBeTruthy();
    c.close();
  });

  it('negotiates base:allocation only after structured replies, and lists it', async () => {
    const c = await connect();
    await c.greet();
    const early = await c.option(Opt.SET_META_CONTEXT, encodeMetaContextQuery('mem', ['base:allocation']));
    expect(early.map((r) => r.type)).toEqual([Rep.ERR_INVALID]);
    await c.option(Opt.STRUCTURED_REPLY);
    const list = await c.option(Opt.LIST_META_CONTEXT, encodeMetaContextQuery('mem', []));
    expect(list.map((r) => r.type)).toEqual([Rep.META_CONTEXT, Rep.ACK]);
    expect(list[0]!.data.toString('utf8', 4)).toBe('base:allocation');
    const unknown = await c.option(Opt.SET_META_CONTEXT, encodeMetaContextQuery('mem', ['qemu:nope', 'base:other']));
    expect(unknown.map((r) => r.type)).toEqual([Rep.ACK]);
    const truncated = await c.option(Opt.SET_META_CONTEXT, encodeMetaContextQuery('mem', ['base:allocation']).subarray(0, 12));
    expect(truncated.map((r) => r.type)).toEqual([Rep.ERR_INVALID]);
    const set = await c.option(Opt.SET_META_CONTEXT, encodeMetaContextQuery('mem', ['base:allocation']));
    expect(set.map((r) => r.type)).toEqual([Rep.META_CONTEXT, Rep.ACK]);
    c.close();
  });

  it('answers ABORT with ACK', async () => {
    const c = await connect();
    await c.greet();
    const r = await c.option(Opt.ABORT);
    expect(r.map((x) => x.type)).toEqual([Rep.ACK]);
    expect(await c.closedWithin()).toBe(true);
  });

  it('EXPORT_NAME: closes for an unknown name, answers size and flags (with or without zeroes) otherwise', async () => {
    const c = await connect();
    await c.greet();
    c.send(encodeOption(Opt.EXPORT_NAME, Buffer.from('nope')));
    expect(await c.closedWithin()).toBe(true);

    const d = await connect();
    await d.greet(1); // FIXED_NEWSTYLE without NO_ZEROES
    d.send(encodeOption(Opt.EXPORT_NAME, Buffer.from('ro')));
    const reply = await d.read(134);
    expect(Number(reply.readBigUInt64BE(0))).toBe(SIZE);
    expect(reply.subarray(10).every((b) => b === 0)).toBe(true);
    d.request(Cmd.READ, { cookie: 5n, offset: 100, length: 50 });
    const r = await d.reply(50);
    expect(r.structured).toBe(false);
    expect(r.payload.equals(image.subarray(100, 150))).toBe(true);
    d.close();
  });

  it('drops a connection on a bad option magic; refuses an oversized option with ERR_TOO_BIG', async () => {
    const c = await connect();
    await c.greet();
    const big = await c.option(0x4242, Buffer.alloc(100_000));
    expect(big.map((r) => r.type)).toEqual([Rep.ERR_TOO_BIG]);
    c.send(Buffer.from('NOTMAGIC\0\0\0\x07\0\0\0\0', 'latin1'));
    expect(await c.closedWithin()).toBe(true);
    await daemonAlive();
  });
});

describe('transmission', () => {
  it('answers a read past the end with EINVAL in a structured error chunk, and the connection lives on', async () => {
    const c = await connect();
    await c.handshake('ro');
    c.request(Cmd.READ, { cookie: 7n, offset: SIZE - 10, length: 20 });
    const [err] = await c.chunks();
    expect(err!.structured).toBe(true);
    expect(err!.type).toBe(ChunkType.ERROR);
    expect(err!.error).toBe(NbdErrno.EINVAL);
    expect(err!.cookie).toBe(7n);
    const msgLen = err!.payload.readUInt16BE(4);
    expect(msgLen).toBeGreaterThan(0);
    expect(msgLen).toBeLessThan(1000);
    c.request(Cmd.READ, { cookie: 8n, offset: SIZE - 10, length: 10 });
    const [ok] = await c.chunks();
    expect(ok!.payload.subarray(8).equals(image.subarray(SIZE - 10))).toBe(true);
    c.close();
  });

  it('refuses writes, trims and zeroes on a read-only export with EPERM and keeps the connection', async () => {
    const c = await connect();
    await c.handshake('ro', { structured: false });
    c.request(Cmd.WRITE, { cookie: 1n, offset: 0, payload: Buffer.alloc(4096, 1) });
    expect((await c.reply()).error).toBe(NbdErrno.EPERM);
    c.request(Cmd.TRIM, { cookie: 2n, offset: 0, length: 4096 });
    expect((await c.reply()).error).toBe(NbdErrno.EPERM);
    c.request(Cmd.WRITE_ZEROES, { cookie: 3n, offset: 0, length: 4096 });
    expect((await c.reply()).error).toBe(NbdErrno.EPERM);
    c.request(Cmd.WRITE, { cookie: 4n, offset: SIZE * 2, payload: Buffer.alloc(16) });
    expect((await c.reply()).error).toBe(NbdErrno.EPERM);
    // FUA is not advertised on this export, but read-only is the reason that matters.
    c.request(Cmd.WRITE, { cookie: 6n, flags: CmdFlag.FUA, offset: 0, payload: Buffer.alloc(16) });
    expect((await c.reply()).error).toBe(NbdErrno.EPERM);
    c.request(Cmd.WRITE_ZEROES, { cookie: 7n, flags: CmdFlag.FUA | CmdFlag.NO_HOLE, offset: 0, length: 512 });
    expect((await c.reply()).error).toBe(NbdErrno.EPERM);
    c.request(Cmd.READ, { cookie: 5n, offset: 0, length: 4096 });
    const r = await c.reply(4096);
    expect(r.error).toBe(0);
    expect(r.payload.equals(image.subarray(0, 4096))).toBe(true);
    c.close();
  });

  it('rejects unknown commands, unknown flags and oversized requests without disconnecting', async () => {
    const c = await connect();
    await c.handshake('mem');
    c.request(99, { cookie: 1n, offset: 0, length: 512 });
    expect((await c.reply()).error).toBe(NbdErrno.EINVAL);
    c.request(Cmd.READ, { cookie: 2n, flags: 0x40, offset: 0, length: 512 });
    expect((await c.reply()).error).toBe(NbdErrno.EINVAL);
    c.request(Cmd.WRITE, { cookie: 3n, flags: CmdFlag.REQ_ONE, payload: Buffer.alloc(512) });
    expect((await c.reply()).error).toBe(NbdErrno.EINVAL);
    c.request(Cmd.READ, { cookie: 4n, offset: 0, length: 65 * 1024 * 1024 });
    const big = await c.reply();
    expect(big.error).toBe(NbdErrno.EOVERFLOW);
    c.request(Cmd.WRITE, { cookie: 5n, offset: SIZE - 100, payload: Buffer.alloc(200) });
    expect((await c.reply()).error).toBe(NbdErrno.ENOSPC);
    c.request(Cmd.READ, { cookie: 6n, offset: 0, length: 16 });
    const [ok] = await c.chunks();
    expect(ok!.payload.subarray(8).equals(Buffer.alloc(16, 0x11))).toBe(true);
    c.close();
  });

  it('writes, FUA writes, zeroes, trims and flushes on a writable export', async () => {
    const c = await connect();
    await c.handshake('mem');
    c.request(Cmd.WRITE, { cookie: 1n, offset: 1_000_003, payload: Buffer.alloc(5000, 0x5e) });
    c.request(Cmd.WRITE, { cookie: 2n, flags: CmdFlag.FUA, offset: 2_000_000, payload: Buffer.alloc(100, 0x6f) });
    c.request(Cmd.WRITE_ZEROES, { cookie: 3n, flags: CmdFlag.NO_HOLE, offset: 1_001_000, length: 1000 });
    c.request(Cmd.WRITE_ZEROES, { cookie: 4n, flags: CmdFlag.FAST_ZERO, offset: 3_000_000, length: 100_000 });
    c.request(Cmd.TRIM, { cookie: 5n, offset: 8 * 1024 * 1024, length: 65536 });
    c.request(Cmd.FLUSH, { cookie: 6n });
    const replies = await c.replies(6);
    expect(replies.map((r) => r.error)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(new Set(replies.map((r) => r.cookie))).toEqual(new Set([1n, 2n, 3n, 4n, 5n, 6n]));
    const got = Buffer.alloc(5000);
    await memory.read(got, 1_000_003);
    const want = Buffer.alloc(5000, 0x5e);
    want.fill(0, 1_001_000 - 1_000_003, 1_002_000 - 1_000_003);
    expect(got.equals(want)).toBe(true);
    c.close();
  });

  it('answers BLOCK_STATUS: EINVAL without a context, exact extents with one, one extent with REQ_ONE', async () => {
    const a = await connect();
    await a.handshake('mem');
    a.request(Cmd.BLOCK_STATUS, { cookie: 1n, offset: 0, length: 65536 });
    expect((await a.reply()).error).toBe(NbdErrno.EINVAL);
    a.close();

    const fresh = new MemoryDevice(1024 * 1024);
    fx.publish({ name: 'bs', device: fresh });
    await fresh.write(Buffer.alloc(65536, 1), 65536);
    const c = await connect();
    await c.handshake('bs', { meta: true });
    c.request(Cmd.BLOCK_STATUS, { cookie: 2n, offset: 0, length: 1024 * 1024 });
    const [all] = await c.chunks();
    expect(all!.type).toBe(ChunkType.BLOCK_STATUS);
    const descriptors = [];
    for (let i = 4; i < all!.payload.length; i += 8) descriptors.push([all!.payload.readUInt32BE(i), all!.payload.readUInt32BE(i + 4)]);
    expect(descriptors).toEqual([
      [65536, 3],
      [65536, 0],
      [1024 * 1024 - 131072, 3],
    ]);
    c.request(Cmd.BLOCK_STATUS, { cookie: 3n, flags: CmdFlag.REQ_ONE, offset: 65536 + 100, length: 1000 });
    const [one] = await c.chunks();
    expect(one!.payload.length).toBe(12);
    expect([one!.payload.readUInt32BE(4), one!.payload.readUInt32BE(8)]).toEqual([1000, 0]);
    c.request(Cmd.BLOCK_STATUS, { cookie: 4n, offset: 1024 * 1024, length: 1 });
    expect((await c.reply()).error).toBe(NbdErrno.EINVAL);
    c.close();
    await fx.catalog.revoke('bs');
  });

  it('answers a large read of a sparse device with hole and data chunks that cover it exactly', async () => {
    const c = await connect();
    await c.handshake('mem');
    c.request(Cmd.READ, { cookie: 9n, offset: 0, length: 6 * 65536 });
    const chunks = await c.chunks();
    const covered: Array<[number, number, number]> = chunks.map((ch) => {
      const off = Number(ch.payload.readBigUInt64BE(0));
      return ch.type === ChunkType.OFFSET_HOLE ? [off, ch.payload.readUInt32BE(8), ch.type] : [off, ch.payload.length - 8, ch.type];
    });
    expect(covered.map(([, , t]) => t)).toContain(ChunkType.OFFSET_HOLE);
    covered.sort((x, y) => x[0] - y[0]);
    let pos = 0;
    for (const [off, len] of covered) {
      expect(off).toBe(pos);
      pos += len;
    }
    expect(pos).toBe(6 * 65536);
    expect(chunks.filter((ch) => ch.flags & 1)).toHaveLength(1);
    c.request(Cmd.READ, { cookie: 10n, flags: CmdFlag.DF, offset: 0, length: 6 * 65536 });
    const df = await c.chunks();
    expect(df).toHaveLength(1);
    expect(df[0]!.type).toBe(ChunkType.OFFSET_DATA);
    c.close();
  });

  it('keeps 64 requests in flight and answers them out of order, each exactly once', async () => {
    // Earlier requests are slower, so replies come back in reverse.
    slow.rules = { delayMs: (op, offset) => (op === 'read' ? 200 - offset / 4096 : 0) };
    const c = await connect();
    await c.handshake('slow');
    const started = Date.now();
    for (let i = 0; i < 64; i++) c.request(Cmd.READ, { cookie: BigInt(1000 + i), offset: i * 4096, length: 4096 });
    const order: bigint[] = [];
    for (let i = 0; i < 64; i++) order.push((await c.reply()).cookie);
    const elapsed = Date.now() - started;
    expect(new Set(order).size).toBe(64);
    expect(order[0]).not.toBe(1000n);
    expect(order.slice().sort()).toEqual(Array.from({ length: 64 }, (_, i) => BigInt(1000 + i)));
    // Run concurrently: well under 64 sequential delays of ~170 ms.
    expect(elapsed).toBeLessThan(3000);
    slow.rules = {};
    c.close();
  });

  it('finishes in-flight requests before closing on DISC', async () => {
    slow.rules = { delayMs: (op) => (op === 'read' ? 150 : 0) };
    const c = await connect();
    await c.handshake('slow');
    for (let i = 0; i < 8; i++) c.request(Cmd.READ, { cookie: BigInt(i), offset: i * 512, length: 512 });
    c.request(Cmd.DISC, { cookie: 100n });
    const replies = await c.replies(8);
    expect(replies.every((r) => r.error === 0)).toBe(true);
    expect(await c.closedWithin()).toBe(true);
    slow.rules = {};
  });

  it('drops only the offending connection on a bad request magic, a huge WRITE, or a truncated frame', async () => {
    const bystander = await connect();
    await bystander.handshake('mem');

    const a = await connect();
    await a.handshake('mem');
    const bad = encodeRequest(0, Cmd.READ, 1n, 0, 512);
    bad.writeUInt32BE(0xdeadbeef, 0);
    a.send(bad);
    expect(await a.closedWithin()).toBe(true);

    const b = await connect();
    await b.handshake('mem');
    b.send(encodeRequest(0, Cmd.WRITE, 1n, 0, 129 * 1024 * 1024));
    expect(await b.closedWithin()).toBe(true);

    const t = await connect();
    await t.handshake('mem');
    t.send(encodeRequest(0, Cmd.WRITE, 1n, 0, 4096).subarray(0, 10));
    t.close();

    bystander.request(Cmd.READ, { cookie: 77n, offset: 0, length: 4 });
    const [r] = await bystander.chunks();
    expect(r!.cookie).toBe(77n);
    expect(r!.payload.subarray(8).equals(Buffer.alloc(4, 0x11))).toBe(true);
    bystander.close();
    await daemonAlive();
  });

  it('survives a client that vanishes with requests in flight', async () => {
    slow.rules = { delayMs: () => 100 };
    const c = await connect();
    await c.handshake('slow');
    for (let i = 0; i < 16; i++) c.request(Cmd.READ, { cookie: BigInt(i), offset: 0, length: 65536 });
    c.close();
    await new Promise((r) => setTimeout(r, 300));
    slow.rules = {};
    await daemonAlive();
  });
});

describe('graceful shutdown', () => {
  it('answers in-flight requests, then closes connections and stops listening', async () => {
    const dev = new FaultLayer(new MemoryDevice(1024 * 1024), { delayMs: () => 300 });
    const own = await startNbd([{ name: 'x', device: dev }]);
    const c = await RawNbdClient.connect({ path: own.socket });
    await c.handshake('x');
    for (let i = 0; i < 4; i++) c.request(Cmd.READ, { cookie: BigInt(i), offset: 0, length: 4096 });
    await new Promise((r) => setTimeout(r, 50));
    const closing = own.close();
    const replies = await c.replies(4);
    expect(replies.map((r) => r.error)).toEqual([0, 0, 0, 0]);
    await closing;
    expect(await c.closedWithin()).toBe(true);
    await expect(RawNbdClient.connect({ path: own.socket })).rejects.toThrow();
  });
});
