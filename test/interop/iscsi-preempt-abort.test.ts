/**
 * PERSISTENT RESERVE OUT PREEMPT AND ABORT across two iSCSI sessions of an in-process target,
 * with raw PDUs (libiscsi's suite has no PREEMPT AND ABORT case): node A holds a reservation and
 * has a READ in flight on the disk (held in the device); node B preempts A's key with PREEMPT AND
 * ABORT. B's command completes only after A's READ has ended, A's READ is never answered (an
 * aborted task), A's registration is gone and B holds the reservation; A can no longer write.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IscsiServer } from '../../src/iscsi/target.js';
import { sessionIqn } from '../../src/iscsi/names.js';
import { Status } from '../../src/iscsi/sense.js';
import { prOut, RawIscsiClient, read10 } from '../helpers/iscsi-raw.js';
import { MemoryCatalog } from '../helpers/memory-catalog.js';
import { GatedDisk } from '../helpers/nbd-fixture.js';

const MiB = 1024 * 1024;
const WE = 1;
let mem: MemoryCatalog;
let server: IscsiServer;
let port: number;
const disk = new GatedDisk(16 * MiB, 1 * MiB); // reads below 1 MiB wait for disk.open()

beforeAll(async () => {
  mem = new MemoryCatalog();
  mem.addSession({ name: 's1', vm: 'vm1', pointId: 'p', createdAt: new Date(), filesDir: '/nonexistent' }, { disk0: disk }, { publish: ['iscsi'] });
  server = new IscsiServer({ view: mem.view('iscsi') });
  port = (await server.listen('127.0.0.1', 0)).port;
});

afterAll(async () => {
  disk.open();
  await server?.close();
  await mem?.close();
});

const readKeys = Buffer.from([0x5e, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
const keysOf = (b: Buffer): bigint[] => Array.from({ length: b.readUInt32BE(4) / 8 }, (_, i) => b.readBigUInt64BE(8 + 8 * i));

it('PREEMPT AND ABORT ends the preempted node\'s running READ before it completes, and fences the node', async () => {
  const a = await RawIscsiClient.connect(port);
  const b = await RawIscsiClient.connect(port);
  try {
    await a.login(sessionIqn('s1'), 'iqn.2026-12.org.rebound.test:node-a');
    await b.login(sessionIqn('s1'), 'iqn.2026-12.org.rebound.test:node-b');
    const aOut = prOut(0, 0n, 0xaan);
    expect((await a.command(aOut.cdb, { dataOut: aOut.dataOut })).status).toBe(Status.Good);
    const aRes = prOut(1, 0xaan, 0n, WE);
    expect((await a.command(aRes.cdb, { dataOut: aRes.dataOut })).status).toBe(Status.Good);
    const bOut = prOut(6, 0n, 0xbbn);
    expect((await b.command(bOut.cdb, { dataOut: bOut.dataOut })).status).toBe(Status.Good);

    // A's READ of LBA 0 waits inside the device.
    const started = disk.started;
    const readItt = a.sendCommand(read10(0, 8), { read: 4096 });
    for (let i = 0; i < 1000 && disk.started === started; i++) await new Promise((r) => setImmediate(r));
    expect(disk.started).toBe(started + 1);

    // B preempts A's key and aborts its tasks; the preemption itself is visible at once.
    const pa = prOut(5, 0xbbn, 0xaan, WE);
    const paItt = b.sendCommand(pa.cdb, { dataOut: pa.dataOut });
    const c = await RawIscsiClient.connect(port);
    try {
      await c.login(sessionIqn('s1'), 'iqn.2026-12.org.rebound.test:observer');
      // B's PDU and C's polls race on the event loop: on a loaded machine C can ask many times
      // before B's command is read, so the polls pause in between (up to 1,000 polls, 10 s).
      let keys: bigint[] = [];
      for (let i = 0; i < 1000; i++) {
        keys = keysOf((await c.command(readKeys, { read: 256 })).data);
        if (keys.length === 1) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(keys).toEqual([0xbbn]);
    } finally {
      c.close();
    }
    disk.open(); // the device request ends; only now may B's command complete
    let answered = false;
    for (;;) {
      const p = await b.next();
      if (p.itt === paItt) {
        expect(p.raw[3]).toBe(Status.Good);
        answered = true;
        break;
      }
    }
    expect(answered).toBe(true);

    // A: its READ is never answered (the next thing it hears is the answer to a new command), and
    // as an unregistered node it may read but not write under B's write-exclusive reservation.
    const tur = await a.command(Buffer.alloc(6));
    expect(tur.status).toBe(Status.Good);
    expect(a.stray.filter((p) => p.itt === readItt)).toEqual([]);
    expect((await a.command(Buffer.from([0x2a, 0, 0, 0, 0x10, 0, 0, 0, 1, 0]), { dataOut: Buffer.alloc(512) })).status).toBe(Status.ReservationConflict);
    const res = (await a.command(Buffer.from([0x5e, 1, 0, 0, 0, 0, 0, 0, 32, 0]), { read: 32 })).data;
    expect(res.readBigUInt64BE(8)).toBe(0xbbn);
  } finally {
    a.close();
    b.close();
  }
});
