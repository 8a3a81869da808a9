/**
 * Persistent reservations (src/iscsi/reservations.ts) through execute(), two or three I_T nexuses on
 * one LogicalUnit table: keys and generations, conflicts by type, preemption as a failover cluster
 * does it (the surviving node preempts the failed node's key and takes the reservation), and the
 * refusals (APTPL, bad parameter list length, bad type, unknown service action). libiscsi's
 * PR families (ALL.Prin..., ALL.Prout...) run against the target in test/interop/iscsi-conformance.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { parsePrState, ReservationFile } from '../../../src/iscsi/reservation-file.js';
import { PersistentReservations } from '../../../src/iscsi/reservations.js';
import { execute, LogicalUnit, type NexusState } from '../../../src/iscsi/scsi.js';
import { Status } from '../../../src/iscsi/sense.js';
import { prOut as out } from '../../helpers/iscsi-raw.js';

const FIXTURES = path.resolve(import.meta.dirname, '../../fixtures');
const SA = { Register: 0, Reserve: 1, Release: 2, Clear: 3, Preempt: 4, RegisterAndIgnore: 6 } as const;
const WE = 1;
const EA = 3;
const WERO = 5;
const EAAR = 8;

function setup(): { lus: LogicalUnit[]; nodes: NexusState[] } {
  const pr = new PersistentReservations();
  const dev = new MemoryDevice(1024 * 1024);
  // Each node's session has its own LogicalUnit (as after a login), sharing the disk's table.
  const lus = [0, 1, 2].map(() => new LogicalUnit({ id: 'session/s1/disk0', device: dev, capabilities: dev.capabilities(), targetName: 't', reservations: pr }));
  const nodes = [0, 1, 2].map((i) => ({ nexus: { id: `node${i}`, initiatorName: `iqn.2026-12.test:node${i}`, isid: Buffer.from([0x80, 0, 0, 0, 0, i]) } }));
  return { lus, nodes };
}


const inCdb = (sa: number, alloc = 1024): Buffer => Buffer.from([0x5e, sa, 0, 0, 0, 0, 0, alloc >> 8, alloc & 0xff, 0]);
const read10 = Buffer.from([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
const write10 = Buffer.from([0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
const tur = Buffer.alloc(6);

describe('persistent reservations', () => {
  it('REGISTER, READ KEYS with the generation, RESERVE, READ RESERVATION, RELEASE, unregister', async () => {
    const { lus, nodes } = setup();
    const run = (i: number, r: { cdb: Buffer; dataOut?: Buffer }) => execute(lus[i], r, nodes[i]);
    expect((await run(0, out(SA.Register, 0n, 0xaan))).status).toBe(Status.Good);
    expect((await run(1, out(SA.Register, 0n, 0xbbn))).status).toBe(Status.Good);
    const keys = (await run(2, { cdb: inCdb(0) })).data!;
    expect(keys.readUInt32BE(0)).toBe(2); // generation
    expect(keys.readUInt32BE(4)).toBe(16);
    expect([keys.readBigUInt64BE(8), keys.readBigUInt64BE(16)]).toEqual([0xaan, 0xbbn]);
    expect((await run(0, out(SA.Reserve, 0xaan, 0n, WERO))).status).toBe(Status.Good);
    const res = (await run(2, { cdb: inCdb(1) })).data!;
    expect(res.readUInt32BE(4)).toBe(16);
    expect(res.readBigUInt64BE(8)).toBe(0xaan);
    expect(res[21]).toBe(WERO);
    expect(res.readUInt32BE(0)).toBe(2); // RESERVE does not move the generation
    // Registrants write, the unregistered node only reads.
    expect((await run(1, { cdb: write10, dataOut: Buffer.alloc(512) })).status).toBe(Status.Good);
    expect((await run(2, { cdb: write10, dataOut: Buffer.alloc(512) })).status).toBe(Status.ReservationConflict);
    expect((await run(2, { cdb: read10 })).status).toBe(Status.Good);
    expect((await run(2, { cdb: tur })).status).toBe(Status.Good);
    // RELEASE with the wrong type is ILLEGAL REQUEST; with the right one it ends the reservation.
    const bad = await run(0, out(SA.Release, 0xaan, 0n, WE));
    expect(bad.status).toBe(Status.CheckCondition);
    expect([bad.sense![12], bad.sense![13]]).toEqual([0x26, 0x04]);
    expect((await run(0, out(SA.Release, 0xaan, 0n, WERO))).status).toBe(Status.Good);
    expect((await run(2, { cdb: write10, dataOut: Buffer.alloc(512) })).status).toBe(Status.Good);
    // Unregister (service action key 0); the wrong key is a conflict.
    expect((await run(1, out(SA.Register, 0x99n, 0n))).status).toBe(Status.ReservationConflict);
    expect((await run(1, out(SA.Register, 0xbbn, 0n))).status).toBe(Status.Good);
    expect((await run(2, { cdb: inCdb(0) })).data!.readUInt32BE(4)).toBe(8);
  });

  it('exclusive access keeps everyone else out; write exclusive lets them read', async () => {
    for (const [type, otherReads] of [[EA, false], [WE, true]] as const) {
      const { lus, nodes } = setup();
      await execute(lus[0], out(SA.Register, 0n, 1n), nodes[0]);
      await execute(lus[1], out(SA.Register, 0n, 2n), nodes[1]);
      expect((await execute(lus[0], out(SA.Reserve, 1n, 0n, type), nodes[0])).status).toBe(Status.Good);
      expect((await execute(lus[1], out(SA.Reserve, 2n, 0n, type), nodes[1])).status).toBe(Status.ReservationConflict);
      expect((await execute(lus[1], { cdb: read10 }, nodes[1])).status).toBe(otherReads ? Status.Good : Status.ReservationConflict);
      expect((await execute(lus[1], { cdb: write10, dataOut: Buffer.alloc(512) }, nodes[1])).status).toBe(Status.ReservationConflict);
      expect((await execute(lus[0], { cdb: write10, dataOut: Buffer.alloc(512) }, nodes[0])).status).toBe(Status.Good);
      // INQUIRY and READ CAPACITY always answer.
      expect((await execute(lus[1], { cdb: Buffer.from([0x12, 0, 0, 0, 36, 0]) }, nodes[1])).status).toBe(Status.Good);
      expect((await execute(lus[1], { cdb: Buffer.from([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]) }, nodes[1])).status).toBe(Status.Good);
    }
  });

  it('failover: the surviving node PREEMPTs the failed node and holds the reservation; the failed node is fenced', async () => {
    const { lus, nodes } = setup();
    await execute(lus[0], out(SA.RegisterAndIgnore, 0n, 0x10n), nodes[0]);
    await execute(lus[1], out(SA.RegisterAndIgnore, 0n, 0x20n), nodes[1]);
    await execute(lus[0], out(SA.Reserve, 0x10n, 0n, WERO), nodes[0]);
    expect((await execute(lus[1], out(SA.Preempt, 0x20n, 0x10n, WERO), nodes[1])).status).toBe(Status.Good);
    const res = (await execute(lus[2], { cdb: inCdb(1) }, nodes[2])).data!;
    expect(res.readBigUInt64BE(8)).toBe(0x20n);
    const keys = (await execute(lus[2], { cdb: inCdb(0) }, nodes[2])).data!;
    expect(keys.readUInt32BE(4)).toBe(8);
    expect(keys.readBigUInt64BE(8)).toBe(0x20n);
    expect((await execute(lus[0], { cdb: write10, dataOut: Buffer.alloc(512) }, nodes[0])).status).toBe(Status.ReservationConflict);
    expect((await execute(lus[0], out(SA.Register, 0x10n, 0x11n), nodes[0])).status).toBe(Status.ReservationConflict); // its key is gone
    // PREEMPT of a key nobody has is a conflict; key 0 without an all-registrants reservation is invalid.
    expect((await execute(lus[1], out(SA.Preempt, 0x20n, 0x77n, WERO), nodes[1])).status).toBe(Status.ReservationConflict);
    expect((await execute(lus[1], out(SA.Preempt, 0x20n, 0n, WERO), nodes[1])).status).toBe(Status.CheckCondition);
    // READ FULL STATUS names the holder with its iSCSI TransportID.
    const full = (await execute(lus[2], { cdb: inCdb(3) }, nodes[2])).data!;
    expect(full.readBigUInt64BE(8)).toBe(0x20n);
    expect(full[8 + 12]! & 1).toBe(1);
    expect(full.toString('utf8', 8 + 28)).toContain('iqn.2026-12.test:node1,i,0x800000000001');
    // CLEAR by a registrant drops everything.
    expect((await execute(lus[1], out(SA.Clear, 0x20n), nodes[1])).status).toBe(Status.Good);
    expect((await execute(lus[0], { cdb: write10, dataOut: Buffer.alloc(512) }, nodes[0])).status).toBe(Status.Good);
  });

  it('PREEMPT AND ABORT hands the preempted nexuses to the abort hook and completes after it; PREEMPT does not', async () => {
    const aborted: string[][] = [];
    let release!: () => void;
    let called!: () => void;
    const hookCalled = new Promise<void>((r) => (called = r));
    const pr = new PersistentReservations({
      abortTasks: async (ids) => {
        aborted.push(ids);
        called();
        await new Promise<void>((r) => (release = r));
      },
    });
    const dev = new MemoryDevice(1024 * 1024);
    const lu = new LogicalUnit({ id: 'd', device: dev, capabilities: dev.capabilities(), targetName: 't', reservations: pr });
    const n = (i: number): NexusState => ({ nexus: { id: `node${i}`, initiatorName: `iqn.x:${i}`, isid: Buffer.alloc(6) } });
    for (const i of [0, 1, 2]) await execute(lu, out(SA.Register, 0n, BigInt(i + 1)), n(i));
    await execute(lu, out(SA.Reserve, 1n, 0n, WE), n(0));
    expect((await execute(lu, out(SA.Preempt, 3n, 2n, WE), n(2))).status).toBe(Status.Good); // node1's key, not the holder's
    expect(aborted).toEqual([]);
    let done = false;
    const p = execute(lu, out(5, 3n, 1n, WE), n(2)).then((r) => ((done = true), r)); // PREEMPT AND ABORT the holder
    await hookCalled;
    expect(aborted).toEqual([['node0']]);
    expect(done).toBe(false); // waits for the preempted tasks
    release();
    expect((await p).status).toBe(Status.Good);
    expect((await execute(lu, { cdb: inCdb(1) }, n(1))).data!.readBigUInt64BE(8)).toBe(3n);
  });

  it('all registrants: every registrant holds it, and it ends with the last registration', async () => {
    const { lus, nodes } = setup();
    await execute(lus[0], out(SA.Register, 0n, 1n), nodes[0]);
    await execute(lus[1], out(SA.Register, 0n, 2n), nodes[1]);
    await execute(lus[0], out(SA.Reserve, 1n, 0n, EAAR), nodes[0]);
    expect((await execute(lus[1], { cdb: read10 }, nodes[1])).status).toBe(Status.Good);
    expect((await execute(lus[2], { cdb: read10 }, nodes[2])).status).toBe(Status.ReservationConflict);
    expect((await execute(lus[2], { cdb: inCdb(1) }, nodes[2])).data!.readBigUInt64BE(8)).toBe(0n); // key 0 for all-registrants
    await execute(lus[0], out(SA.Register, 1n, 0n), nodes[0]);
    expect((await execute(lus[2], { cdb: read10 }, nodes[2])).status).toBe(Status.ReservationConflict); // node1 still holds it
    await execute(lus[1], out(SA.Register, 2n, 0n), nodes[1]);
    expect((await execute(lus[2], { cdb: read10 }, nodes[2])).status).toBe(Status.Good);
    expect((await execute(lus[2], { cdb: inCdb(1) }, nodes[2])).data!.readUInt32BE(4)).toBe(0);
  });

  it('REPORT CAPABILITIES says what is offered; APTPL, SPEC_I_PT, bad lengths, types and service actions are refused', async () => {
    const { lus, nodes } = setup();
    const caps = (await execute(lus[0], { cdb: inCdb(2) }, nodes[0])).data!;
    expect(caps.readUInt16BE(0)).toBe(8);
    expect(caps[2]! & 0x01).toBe(0); // PTPL_C: without a store reservations do not survive a restart
    expect(caps[3]! & 0x80).toBe(0x80); // TMV
    expect([caps[4], caps[5]]).toEqual([0xea, 0x01]);
    const sense = async (r: { cdb: Buffer; dataOut?: Buffer }): Promise<number[]> => {
      const x = await execute(lus[0], r, nodes[0]);
      expect(x.status).toBe(Status.CheckCondition);
      return [x.sense![12]!, x.sense![13]!];
    };
    expect(await sense(out(SA.Register, 0n, 5n, 0, 0x01))).toEqual([0x26, 0x00]); // APTPL
    expect(await sense(out(SA.Register, 0n, 5n, 0, 0x08))).toEqual([0x26, 0x00]); // SPEC_I_PT
    expect(await sense(out(SA.Register, 0n, 5n, 0, 0, 16))).toEqual([0x1a, 0x00]); // parameter list length
    await execute(lus[0], out(SA.Register, 0n, 5n), nodes[0]);
    expect(await sense(out(SA.Reserve, 5n, 0n, 2))).toEqual([0x24, 0x00]); // type 2 does not exist
    expect(await sense(out(SA.Reserve, 5n, 0n, 0x10 | WE))).toEqual([0x24, 0x00]); // scope other than LU
    expect(await sense(out(7, 5n))).toEqual([0x24, 0x00]); // REGISTER AND MOVE
    expect(await sense({ cdb: inCdb(9) })).toEqual([0x24, 0x00]);
    // Without a registration nothing can be reserved.
    expect((await execute(lus[1], out(SA.Reserve, 0n, 0n, WE), nodes[1])).status).toBe(Status.ReservationConflict);
    // READ KEYS cut to the allocation length keeps the header.
    expect((await execute(lus[1], { cdb: inCdb(0, 8) }, nodes[1])).data!.length).toBe(8);
  });
});

describe('persistence through power loss (APTPL)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-pr-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const node = (i: number): NexusState => ({ nexus: { id: `iqn.x:${i}\0${'40000000000' + i}\0t`, initiatorName: `iqn.x:${i}`, isid: Buffer.from(`40000000000${i}`, 'hex') } });
  const unitOver = (pr: PersistentReservations): LogicalUnit => {
    const dev = new MemoryDevice(1024 * 1024);
    return new LogicalUnit({ id: 'd', device: dev, capabilities: dev.capabilities(), targetName: 't', reservations: pr });
  };

  it('a REGISTER with APTPL saves every change before answering; a new table loads it; APTPL=0 removes it', async () => {
    const store = ReservationFile.forSessionDisk(dir, 'disk0');
    const lu = unitOver(new PersistentReservations({ store }));
    expect((await execute(lu, out(SA.Register, 0n, 0x1234n, 0, 0x01), node(0))).status).toBe(Status.Good);
    expect((await execute(lu, out(SA.Register, 0n, 0x5678n), node(1))).status).toBe(Status.Good); // APTPL=0 from node 1 ...
    expect(fs.existsSync(store.file)).toBe(false); // ... applies to the whole state: not saved
    expect((await execute(lu, out(SA.Register, 0x5678n, 0x5679n, 0, 0x01), node(1))).status).toBe(Status.Good);
    expect((await execute(lu, out(SA.Reserve, 0x1234n, 0n, WERO), node(0))).status).toBe(Status.Good);
    const caps = (await execute(lu, { cdb: inCdb(2) }, node(0))).data!;
    expect([caps[2]! & 1, caps[3]! & 1]).toEqual([1, 1]); // PTPL_C, PTPL_A
    const saved = JSON.parse(fs.readFileSync(store.file, 'utf8'));
    expect(saved).toMatchObject({ version: 1, generation: 3, reservation: { holder: node(0).nexus!.id, type: WERO } });
    // After a restart: the same nexuses find their keys and the reservation.
    const again = unitOver(new PersistentReservations({ store, initial: (await store.load())! }));
    const res = (await execute(again, { cdb: inCdb(1) }, node(2))).data!;
    expect([res.readUInt32BE(0), res.readBigUInt64BE(8), res[21]]).toEqual([3, 0x1234n, WERO]);
    expect((await execute(again, { cdb: write10, dataOut: Buffer.alloc(512) }, node(2))).status).toBe(Status.ReservationConflict);
    expect((await execute(again, { cdb: write10, dataOut: Buffer.alloc(512) }, node(1))).status).toBe(Status.Good);
    expect((await execute(again, out(SA.Register, 0x1234n, 0x1234n), node(0))).status).toBe(Status.Good); // APTPL=0
    expect(fs.existsSync(store.file)).toBe(false);
  });

  it('a failed save answers HARDWARE ERROR and leaves the state as it was', async () => {
    const failing = { save: async () => Promise.reject(new Error('ENOSPC: no space left on device')) };
    const lu = unitOver(new PersistentReservations({ store: failing }));
    const r = await execute(lu, out(SA.Register, 0n, 7n, 0, 0x01), node(0));
    expect(r.status).toBe(Status.CheckCondition);
    expect([r.sense![2]! & 0x0f, r.sense![12], r.sense![13]]).toEqual([0x4, 0x44, 0x00]);
    const keys = (await execute(lu, { cdb: inCdb(0) }, node(0))).data!;
    expect([keys.readUInt32BE(0), keys.readUInt32BE(4)]).toEqual([0, 0]);
  });

  it('reads the committed version-1 fixture and refuses damaged files', () => {
    const text = fs.readFileSync(path.join(FIXTURES, 'iscsi-pr-v1.json'), 'utf8');
    const s = parsePrState(text);
    expect(s.generation).toBe(4);
    expect(s.registrations.map((r) => BigInt(r.key))).toEqual([0x1111n, 0x2222n]);
    expect(s.reservation).toEqual({ holder: s.registrations[0]!.id, type: WERO });
    expect(() => parsePrState(text.replace('"version":1', '"version":2'))).toThrow(/version/);
    expect(() => parsePrState(text.replace('"4369"', '"0"'))).toThrow(/key/);
    expect(() => parsePrState('{')).toThrow();
  });
});
