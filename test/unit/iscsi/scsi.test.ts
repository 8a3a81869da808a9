import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { checked } from '../../../src/blockdev/checked.js';
import { readOnlyCapabilities } from '../../../src/blockdev/types.js';
import { execute, LogicalUnit } from '../../../src/iscsi/scsi.js';
import { Status } from '../../../src/iscsi/sense.js';
import { BufferDevice } from '../../helpers/memory-catalog.js';

const SIZE = 8 * 1024 * 1024;

function unit(id = 'session/s1/disk0', writable = true): LogicalUnit {
  const dev = writable ? checked(new MemoryDevice(SIZE)) : checked(new BufferDevice(Buffer.alloc(SIZE, 0x5a)));
  return new LogicalUnit({ id, device: dev, capabilities: writable ? dev.capabilities() : readOnlyCapabilities(), targetName: 'iqn.2026-12.org.rebound:session.s1' });
}

function cdb(bytes: number[], len = 16): Buffer {
  const b = Buffer.alloc(len);
  Buffer.from(bytes).copy(b);
  return b;
}

const sense = (r: { sense?: Buffer }): [number, number, number] => [r.sense![2]! & 0x0f, r.sense![12]!, r.sense![13]!];

function rw16(op: number, lba: bigint, blocks: number): Buffer {
  const b = Buffer.alloc(16);
  b[0] = op;
  b.writeBigUInt64BE(lba, 2);
  b.writeUInt32BE(blocks, 10);
  return b;
}

describe('SCSI block target', () => {
  it('answers INQUIRY with CmdQue, SPC-4 and version descriptors', async () => {
    const r = await execute(unit(), { cdb: cdb([0x12, 0, 0, 0, 96, 0]) });
    expect(r.status).toBe(Status.Good);
    expect(r.data![2]).toBe(0x06);
    expect(r.data![7]! & 0x02).toBe(0x02);
    expect(r.data!.readUInt16BE(60)).toBe(0x0960); // iSCSI
    const short = await execute(unit(), { cdb: cdb([0x12, 0, 0, 0, 5, 0]) });
    expect(short.data!.length).toBe(5);
  });

  it('gives each disk its own stable NAA identifier and serial', async () => {
    const page = async (u: LogicalUnit, p: number) => (await execute(u, { cdb: cdb([0x12, 1, p, 0x10, 0, 0]) })).data!;
    const a = await page(unit('session/s1/disk0'), 0x83);
    const a2 = await page(unit('session/s1/disk0'), 0x83);
    const b = await page(unit('session/s1/disk1'), 0x83);
    expect(a).toEqual(a2);
    expect(a).not.toEqual(b);
    // First designator: NAA (type 3), binary, 16 bytes, NAA 6.
    expect(a[4]! & 0x0f).toBe(1);
    expect(a[5]! & 0x0f).toBe(3);
    expect(a[7]).toBe(16);
    expect(a[8]! >> 4).toBe(6);
    const sn = await page(unit('x'), 0x80);
    expect(sn[1]).toBe(0x80);
    expect(sn.readUInt16BE(2)).toBeGreaterThan(0);
    const list = await page(unit(), 0x00);
    expect([...list.subarray(4)]).toEqual([0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    const ro = await page(unit('p', false), 0x00);
    expect([...ro.subarray(4)]).toEqual([0x00, 0x80, 0x83, 0xb0, 0xb1]);
    const bad = await execute(unit(), { cdb: cdb([0x12, 1, 0x99, 0, 255, 0]) });
    expect(sense(bad)).toEqual([5, 0x24, 0]);
  });

  it('reports capacity and thin provisioning', async () => {
    const r10 = await execute(unit(), { cdb: cdb([0x25]) });
    expect(r10.data!.readUInt32BE(0)).toBe(SIZE / 512 - 1);
    expect(r10.data!.readUInt32BE(4)).toBe(512);
    const r16 = await execute(unit(), { cdb: cdb([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32]) });
    expect(r16.data!.readBigUInt64BE(0)).toBe(BigInt(SIZE / 512 - 1));
    expect(r16.data![14]! & 0x80).toBe(0x80);
    const ro16 = await execute(unit('p', false), { cdb: cdb([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32]) });
    expect(ro16.data![14]! & 0x80).toBe(0);
  });

  it('reads and writes, and refuses out-of-range LBAs including 64-bit ones', async () => {
    const u = unit();
    const data = Buffer.alloc(1024, 0xab);
    expect((await execute(u, { cdb: rw16(0x8a, 10n, 2), dataOut: data })).status).toBe(Status.Good);
    const r = await execute(u, { cdb: rw16(0x88, 10n, 2) });
    expect(r.data).toEqual(data);
    const last = BigInt(SIZE / 512 - 1);
    expect((await execute(u, { cdb: rw16(0x88, last, 1) })).status).toBe(Status.Good);
    expect(sense(await execute(u, { cdb: rw16(0x88, last, 2) }))).toEqual([5, 0x21, 0]);
    expect(sense(await execute(u, { cdb: rw16(0x88, 0xffffffffffffffffn, 1) }))).toEqual([5, 0x21, 0]);
    expect(sense(await execute(u, { cdb: rw16(0x8a, 0x8000000000000000n, 1), dataOut: Buffer.alloc(512) }))).toEqual([5, 0x21, 0]);
    // READ(10) with RDPROTECT set: no protection information here.
    expect(sense(await execute(u, { cdb: cdb([0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]) }))).toEqual([5, 0x24, 0]);
  });

  it('answers writes to a read-only LUN with DATA PROTECT / WRITE PROTECTED', async () => {
    const u = unit('p', false);
    expect(sense(await execute(u, { cdb: rw16(0x8a, 0n, 1), dataOut: Buffer.alloc(512) }))).toEqual([7, 0x27, 0]);
    expect(sense(await execute(u, { cdb: cdb([0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0]), dataOut: Buffer.alloc(512) }))).toEqual([7, 0x27, 0]);
    const ms = await execute(u, { cdb: cdb([0x1a, 0, 0x3f, 0, 255, 0]) });
    expect(ms.data![2]! & 0x80).toBe(0x80); // WP
  });

  it('compares with VERIFY and COMPARE AND WRITE, reporting MISCOMPARE', async () => {
    const u = unit();
    await execute(u, { cdb: rw16(0x8a, 0n, 1), dataOut: Buffer.alloc(512, 1) });
    const v = cdb([0x2f, 0x02, 0, 0, 0, 0, 0, 0, 1, 0]);
    expect((await execute(u, { cdb: v, dataOut: Buffer.alloc(512, 1) })).status).toBe(Status.Good);
    const bad = Buffer.alloc(512, 1);
    bad[100] = 2;
    const m = await execute(u, { cdb: v, dataOut: bad });
    expect(sense(m)).toEqual([0x0e, 0x1d, 0]);
    expect(m.sense!.readUInt32BE(3)).toBe(100);
    const caw = rw16(0x89, 0n, 0);
    caw[13] = 1;
    expect((await execute(u, { cdb: caw, dataOut: Buffer.concat([Buffer.alloc(512, 1), Buffer.alloc(512, 3)]) })).status).toBe(Status.Good);
    expect(sense(await execute(u, { cdb: caw, dataOut: Buffer.concat([Buffer.alloc(512, 1), Buffer.alloc(512, 4)]) }))).toEqual([0x0e, 0x1d, 0]);
  });

  it('unmaps, write-sames and flushes', async () => {
    const u = unit();
    await execute(u, { cdb: rw16(0x8a, 0n, 8), dataOut: Buffer.alloc(4096, 9) });
    const ws = cdb([0x93, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8]);
    expect((await execute(u, { cdb: ws, dataOut: Buffer.alloc(512) })).status).toBe(Status.Good);
    expect((await execute(u, { cdb: rw16(0x88, 0n, 8) })).data).toEqual(Buffer.alloc(4096));
    const param = Buffer.alloc(24);
    param.writeUInt16BE(22, 0);
    param.writeUInt16BE(16, 2);
    param.writeBigUInt64BE(8n, 8);
    param.writeUInt32BE(8, 16);
    expect((await execute(u, { cdb: cdb([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], 10), dataOut: param })).status).toBe(Status.Good);
    param.writeBigUInt64BE(BigInt(SIZE / 512), 8);
    expect(sense(await execute(u, { cdb: cdb([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], 10), dataOut: param }))).toEqual([5, 0x21, 0]);
    expect((await execute(u, { cdb: cdb([0x35]) })).status).toBe(Status.Good);
  });

  it('lists LUNs, mode pages and supported op codes; unknown op codes get INVALID COMMAND OPERATION CODE', async () => {
    const rl = await execute(undefined, { cdb: cdb([0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]) }, {}, [0, 1, 300]);
    expect(rl.data!.readUInt32BE(0)).toBe(24);
    expect(rl.data![8 + 16]).toBe(0x41);
    const ms = await execute(unit(), { cdb: cdb([0x5a, 0, 0x08, 0, 0, 0, 0, 1, 0, 0]) });
    const page = ms.data!.subarray(8 + 8);
    expect(page[0]).toBe(0x08);
    expect(page[2]! & 0x04).toBe(0x04); // WCE
    const saved = await execute(unit(), { cdb: cdb([0x1a, 0, 0xc8, 0, 255, 0]) });
    expect(sense(saved)).toEqual([5, 0x39, 0]);
    const rsoc = await execute(unit(), { cdb: cdb([0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]) });
    expect(rsoc.data!.readUInt32BE(0) % 8).toBe(0);
    expect(sense(await execute(unit(), { cdb: cdb([0xc0]) }))).toEqual([5, 0x20, 0]);
    expect(sense(await execute(undefined, { cdb: cdb([0x00]) }))).toEqual([5, 0x25, 0]);
    const inq = await execute(undefined, { cdb: cdb([0x12, 0, 0, 0, 36, 0]) });
    expect(inq.data![0]).toBe(0x7f);
  });
});
