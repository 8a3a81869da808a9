/**
 * Fuzz target `iscsi`: the iSCSI target's decoding, from bytes to SCSI.
 *
 * Each input is a byte stream of structure-aware PDUs: a login (valid for the fixture's target,
 * or with random stages, flags, versions and text keys including CHAP keys), then PDUs of every
 * opcode with random flags, lengths that lie, AHSs, CDBs of known op codes with random fields
 * (64-bit LBAs, transfer lengths, protection bits) or random bytes, Data-Out with random tags,
 * offsets and DataSNs, text requests, task management, logout; the stream may be cut anywhere.
 *
 * Per input, in-process and pure: `decodePdu` walks the stream (typed results only), every data
 * segment goes through `parseText`, every command's CDB through `execute` on a scratch unit
 * (always a status, never a throw); then the bytes go to a live IscsiServer over TCP.
 *
 * Oracle: no decoder throws; the server closes each fuzzed connection within 3 s of the client's
 * EOF; every 50 inputs a fresh initiator logs in and READs 64 KiB at two offsets with the bytes
 * the device holds (other sessions unaffected), and no connection is left open.
 */
import fc from 'fast-check';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { checked } from '../../../src/blockdev/checked.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { LoginNegotiator } from '../../../src/iscsi/login.js';
import { exportIqn } from '../../../src/iscsi/names.js';
import { BHS_LENGTH, decodePdu, NO_DIGESTS, Op, parseBhs, PduError, scsiCommandFields } from '../../../src/iscsi/pdu.js';
import { execute, LogicalUnit } from '../../../src/iscsi/scsi.js';
import { IscsiServer } from '../../../src/iscsi/target.js';
import { encodeText, parseText } from '../../../src/iscsi/text.js';
import { silentLogger } from '../../../src/util/log.js';
import { patternBuffer } from '../../helpers/images.js';
import { RawIscsiClient, read10 } from '../../helpers/iscsi-raw.js';
import { OracleFailure, rarely, u32, type FuzzTarget, feedConnection } from '../lib.js';

const EXPORT = 'fuzz';
const TARGET = exportIqn(EXPORT);
const SIZE = 1 << 20;

interface Input {
  bytes: Buffer;
  linger: boolean;
}

const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 0xffff });
const KEYS = ['InitiatorName', 'TargetName', 'SessionType', 'AuthMethod', 'CHAP_A', 'CHAP_N', 'CHAP_R', 'CHAP_I', 'CHAP_C', 'HeaderDigest', 'DataDigest', 'MaxRecvDataSegmentLength', 'MaxBurstLength', 'FirstBurstLength', 'InitialR2T', 'ImmediateData', 'MaxConnections', 'ErrorRecoveryLevel', 'SendTargets', 'X-foo'];
const textData = fc.oneof(
  fc.array(fc.tuple(fc.constantFrom(...KEYS), fc.oneof(fc.constantFrom('None', 'CRC32C', 'Yes', 'No', 'All', 'Normal', 'Discovery', '5', '0x1234', '0bAAE=', '', TARGET, '999999999999'), fc.string({ maxLength: 30 }))), { maxLength: 8 }).map((p) => encodeText(p)),
  fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
);

/** CDBs: known op codes with random fields, or random bytes. */
const OPS = [0x00, 0x03, 0x08, 0x0a, 0x12, 0x1a, 0x25, 0x28, 0x2a, 0x2e, 0x2f, 0x34, 0x35, 0x41, 0x42, 0x5a, 0x88, 0x89, 0x8a, 0x8f, 0x91, 0x93, 0x9e, 0xa0, 0xa3, 0xa8, 0xaa];
const cdb = fc.oneof(
  fc.tuple(fc.constantFrom(...OPS), fc.uint8Array({ minLength: 15, maxLength: 15 }), fc.boolean(), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.oneof(fc.integer({ min: 0, max: 64 }), u32())).map(([op, rest, small, lba, len]) => {
    const b = Buffer.alloc(16);
    b[0] = op;
    Buffer.from(rest).copy(b, 1);
    if (small) {
      b.writeBigUInt64BE(lba % 4096n, 2);
      b.writeUInt32BE(len % 64, 10);
      b[1] = b[1]! & 0x1f;
      b[15] = 0;
    } else if (op === 0x88 || op === 0x8a) b.writeBigUInt64BE(lba, 2);
    return b;
  }),
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b)),
);

function bhs(op: number, flags: number, fill: (b: Buffer) => void): Buffer {
  const b = Buffer.alloc(BHS_LENGTH);
  b[0] = op;
  b[1] = flags;
  fill(b);
  return b;
}

/** One PDU on the wire: BHS with a DataSegmentLength that may lie, then data and padding. */
const frame = (bhsArb: fc.Arbitrary<Buffer>, data: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> =>
  fc.tuple(bhsArb, data, rarely(fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 0xffffff })), 6), rarely(fc.uint8Array({ maxLength: 40 }), 8)).map(([b, d, lie, ahs]) => {
    const h = Buffer.from(b);
    const ahsBuf = ahs ? Buffer.from(ahs.subarray(0, ahs.length - (ahs.length % 4))) : Buffer.alloc(0);
    h[4] = ahsBuf.length / 4;
    h.writeUIntBE(lie ?? d.length, 5, 3);
    const pad = Buffer.alloc((4 - (d.length % 4)) % 4);
    return Buffer.concat([h, ahsBuf, d, pad]);
  });

const cmdSN = fc.oneof(fc.integer({ min: 1, max: 40 }), u32());
const login = frame(
  fc.tuple(u8, u8, u16, u32()).map(([flags, vmin, tsih, itt]) => bhs(Op.Login | 0x40, flags, (b) => {
    b[3] = vmin % 4 === 0 ? 0 : vmin;
    b.writeUInt16BE(tsih % 8 === 0 ? tsih : 0, 14);
    b.writeUInt32BE(itt, 16);
    b.writeUInt32BE(1, 24);
  })),
  textData,
);
const validLogin = fc.constant(
  Buffer.concat([
    bhs(Op.Login | 0x40, 0x80 | (1 << 2) | 3, (b) => {
      b.set([0x80, 0, 0, 0, 9, 9], 8);
      b.writeUInt32BE(1, 16);
      b.writeUInt32BE(1, 24);
      b.writeUIntBE(0, 5, 3);
    }),
  ]),
).chain((b) =>
  fc.constant(
    (() => {
      const d = encodeText([['InitiatorName', 'iqn.2026-12.org.rebound.fuzz:i'], ['TargetName', TARGET], ['SessionType', 'Normal'], ['ImmediateData', 'Yes'], ['InitialR2T', 'No'], ['MaxBurstLength', '65536'], ['FirstBurstLength', '8192']]);
      const h = Buffer.from(b);
      h.writeUIntBE(d.length, 5, 3);
      return Buffer.concat([h, d, Buffer.alloc((4 - (d.length % 4)) % 4)]);
    })(),
  ),
);

const ffp = fc.oneof(
  { weight: 6, arbitrary: frame(fc.tuple(u8, cmdSN, u32(), cdb, fc.boolean()).map(([flags, sn, edtl, c, imm]) => bhs(Op.ScsiCommand | (imm ? 0x40 : 0), flags, (b) => {
    b.writeUInt32BE(sn % 100, 16);
    b.writeUInt32BE(edtl % 3 === 0 ? edtl : edtl % 70000, 20);
    b.writeUInt32BE(sn, 24);
    c.copy(b, 32);
    b[9] = flags % 5 === 0 ? flags : 0;
  })), fc.oneof(fc.constant(Buffer.alloc(0)), fc.uint8Array({ maxLength: 2048 }).map((d) => Buffer.from(d)))) },
  { weight: 3, arbitrary: frame(fc.tuple(u8, u32(), u32(), u32(), u32()).map(([flags, itt, ttt, dsn, off]) => bhs(Op.DataOut, flags, (b) => {
    b.writeUInt32BE(itt % 100, 16);
    b.writeUInt32BE(ttt % 4 === 0 ? 0xffffffff : ttt % 10, 20);
    b.writeUInt32BE(dsn % 4, 36);
    b.writeUInt32BE(off % 3 === 0 ? off : off % 70000, 40);
  })), fc.uint8Array({ maxLength: 4096 }).map((d) => Buffer.from(d))) },
  { weight: 1, arbitrary: frame(fc.tuple(u8, u32(), cmdSN).map(([flags, itt, sn]) => bhs(Op.NopOut | 0x40, flags | 0x80, (b) => { b.writeUInt32BE(itt, 16); b.writeUInt32BE(0xffffffff, 20); b.writeUInt32BE(sn, 24); })), fc.uint8Array({ maxLength: 64 }).map((d) => Buffer.from(d))) },
  { weight: 1, arbitrary: frame(fc.tuple(u8, u32(), u32(), cmdSN).map(([fn, itt, ref, sn]) => bhs(Op.TaskMgmt | 0x40, 0x80 | (fn % 10), (b) => { b.writeUInt32BE(itt, 16); b.writeUInt32BE(ref % 100, 20); b.writeUInt32BE(sn, 24); b.writeUInt32BE(sn, 32); })), fc.constant(Buffer.alloc(0))) },
  { weight: 1, arbitrary: frame(fc.tuple(u8, u32(), u32(), cmdSN).map(([flags, itt, ttt, sn]) => bhs(Op.Text, flags, (b) => { b.writeUInt32BE(itt % 4, 16); b.writeUInt32BE(ttt % 3 === 0 ? 0xffffffff : ttt % 5, 20); b.writeUInt32BE(sn, 24); })), textData) },
  { weight: 1, arbitrary: frame(fc.tuple(u8, cmdSN).map(([reason, sn]) => bhs(Op.Logout | 0x40, 0x80 | (reason % 4), (b) => { b.writeUInt32BE(7, 16); b.writeUInt32BE(sn, 24); })), fc.constant(Buffer.alloc(0))) },
  { weight: 1, arbitrary: frame(fc.tuple(u8, u8).map(([op, flags]) => bhs(op, flags, () => undefined)), fc.uint8Array({ maxLength: 64 }).map((d) => Buffer.from(d))) },
);

const input: fc.Arbitrary<Input> = fc
  .record({
    login: fc.oneof({ weight: 4, arbitrary: validLogin }, { weight: 1, arbitrary: fc.array(login, { minLength: 1, maxLength: 4 }).map((f) => Buffer.concat(f)) }),
    pdus: fc.array(ffp, { minLength: 1, maxLength: 10 }),
    cut: rarely(fc.nat(), 8),
    linger: fc.boolean(),
  })
  .map(({ login: l, pdus, cut, linger }) => {
    const bytes = Buffer.concat([l, ...pdus]);
    return { bytes: cut === null ? bytes : bytes.subarray(0, cut % (bytes.length + 1)), linger };
  });

interface Ctx {
  server: IscsiServer;
  catalog: Catalog;
  device: MemoryDevice;
  port: number;
  scratch: LogicalUnit;
}

/** The pure decoders on the input: typed results only, never a throw. */
async function decodeAll(bytes: Buffer, scratch: LogicalUnit): Promise<void> {
  let off = 0;
  const limits = { ...NO_DIGESTS, maxDataLength: 262144 };
  const neg = new LoginNegotiator({ portalGroupTag: 1, limits: { maxRecvDataSegmentLength: 262144, maxBurstLength: 262144, firstBurstLength: 65536 }, chap: { user: 'u', secret: 'secretsecret12' }, targetExists: (n) => n === TARGET, tsihStatus: () => [2, 10] });
  for (let i = 0; i < 64 && off < bytes.length; i++) {
    const r = decodePdu(bytes.subarray(off), limits);
    if (!r.ok) {
      if ('error' in r && !(r.error instanceof PduError)) throw new OracleFailure('decodePdu gave an untyped error');
      return;
    }
    off += r.consumed;
    const p = r.pdu;
    parseText(p.data);
    if (p.opcode === Op.Login) neg.handle(p);
    if (p.opcode === Op.ScsiCommand) {
      const f = scsiCommandFields(p);
      if (!(f instanceof PduError)) {
        const res = await execute(scratch, { cdb: f.cdb, dataOut: p.data }, {}, [0]);
        if (typeof res.status !== 'number') throw new OracleFailure('execute gave no status');
      }
    }
  }
  parseBhs(Buffer.concat([bytes.subarray(0, BHS_LENGTH), Buffer.alloc(BHS_LENGTH)]));
}


export function iscsiTarget(): FuzzTarget<Input, Ctx> {
  return {
    name: 'iscsi',
    oracle: 'PDU, text and CDB decoders never throw; the server closes each fuzzed connection within 3 s of the client EOF; every 50 inputs a fresh initiator logs in and READs the device bytes; no connection leaks',
    arbitrary: input,
    timeoutMs: 5000,
    setup: async () => {
      const device = new MemoryDevice(SIZE);
      await device.write(patternBuffer(0, SIZE), 0);
      const catalog = new Catalog(silentLogger);
      catalog.publish({ name: EXPORT, kind: 'adhoc', disk: EXPORT, size: SIZE, capabilities: device.capabilities(), publish: ['iscsi'], source: 'memory', device, owned: false });
      // Fuzzed writes land on a device of their own: the liveness reads check the published one.
      const scratchDev = checked(new MemoryDevice(SIZE));
      const scratch = new LogicalUnit({ id: 'scratch', device: scratchDev, capabilities: scratchDev.capabilities(), targetName: TARGET });
      const server = new IscsiServer({ view: catalog.view('iscsi'), log: silentLogger, loginTimeoutMs: 10_000 });
      const { port } = await server.listen('127.0.0.1', 0);
      return { server, catalog, device, port, scratch };
    },
    check: async ({ bytes, linger }, ctx) => {
      await decodeAll(bytes, ctx.scratch);
      await feedConnection({ port: ctx.port }, bytes, linger, 3000);
    },
    liveness: {
      every: 50,
      check: async (ctx) => {
        const c = await RawIscsiClient.connect(ctx.port);
        try {
          await c.login(TARGET, 'iqn.2026-12.org.rebound.fuzz:liveness', Buffer.from([0x80, 0, 0, 0, 7, 7]));
          for (const off of [0, SIZE - 65536]) {
            const r = await c.command(read10(off / 512, 128), { read: 65536 });
            const want = Buffer.alloc(65536);
            await ctx.device.read(want, off);
            if (r.status !== 0 || !r.data.equals(want)) throw new OracleFailure(`liveness READ at ${off}: status ${r.status}, data ${r.data.equals(want) ? 'right' : 'wrong'}`);
          }
        } finally {
          c.close();
        }
        const deadline = Date.now() + 3000;
        while (ctx.server.connectionCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        if (ctx.server.connectionCount > 0) throw new OracleFailure(`${ctx.server.connectionCount} connection(s) still open after every client left`);
      },
    },
    teardown: async (ctx) => {
      await ctx.server.close();
      await ctx.catalog.close();
    },
  };
}
