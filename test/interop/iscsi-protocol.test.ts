/**
 * iSCSI protocol behaviour that real initiators rarely show, driven with raw PDUs
 * (test/helpers/iscsi-raw.ts) against an in-process IscsiServer: NOP ping, CmdSN window,
 * Reject of unknown opcodes, session reinstatement by ISID, the login timeout and the per-client
 * connection limit; and CRC32C header digests end to end with QEMU (header-digest=crc32c).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BHS_LENGTH, Op } from '../../src/iscsi/pdu.js';
import { ByteBudget } from '../../src/util/byte-budget.js';
import { tempDir } from '../helpers/images.js';
import { startIscsi, type IscsiFixture } from '../helpers/iscsi-fixture.js';
import { RawIscsiClient, read10 } from '../helpers/iscsi-raw.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';

const MiB = 1024 * 1024;
let fx: IscsiFixture;
/** The daemon-wide budget the server shares (a small one: 1 MiB, so large commands wait for bytes). */
const budget = new ByteBudget(1 * MiB);

beforeAll(async () => {
  fx = await startIscsi({ sizes: [4 * MiB], pointSize: 4 * MiB, server: { maxConnectionsPerClient: 3, budget } });
});

afterAll(async () => {
  await fx?.close();
});

const closed = (c: RawIscsiClient): Promise<void> => new Promise((r) => (c.socket.destroyed ? r() : c.socket.once('close', () => r())));

describe('iSCSI protocol edges (raw PDUs)', () => {
  it('answers a NOP-Out ping with its data, drops commands outside the CmdSN window, rejects unknown opcodes', async () => {
    const c = await RawIscsiClient.connect(fx.port);
    try {
      const login = await c.login(fx.sessionIqn);
      expect(login.TargetPortalGroupTag).toBe('1');
      const nop = Buffer.alloc(BHS_LENGTH);
      nop[0] = Op.NopOut | 0x40;
      nop[1] = 0x80;
      nop.writeUInt32BE(0x99, 16);
      nop.writeUInt32BE(0xffffffff, 20);
      nop.writeUInt32BE(c.cmdSN, 24);
      c.send(nop, Buffer.from('ping!'));
      const pong = await c.next();
      expect(pong.opcode).toBe(Op.NopIn);
      expect(pong.itt).toBe(0x99);
      expect(pong.data.toString()).toBe('ping!');

      // A command far ahead of ExpCmdSN is dropped silently; the next in-order command is answered.
      const saved = c.cmdSN;
      c.cmdSN = (saved + 1000) >>> 0;
      c.sendCommand(read10(0, 1), { read: 512 });
      c.cmdSN = saved;
      const ok = await c.command(read10(0, 1), { read: 512 });
      expect(ok.status).toBe(0);
      expect(ok.data.length).toBe(512);
      const ok2 = await c.command(read10(1, 1), { read: 512 });
      expect(ok2.status).toBe(0);
      expect(c.stray).toEqual([]); // nothing ever came back for the out-of-window command

      const bogus = Buffer.alloc(BHS_LENGTH);
      bogus[0] = 0x1c; // not an initiator opcode
      bogus[1] = 0x80;
      c.send(bogus);
      const rej = await c.next();
      expect(rej.opcode).toBe(Op.Reject);
      expect(rej.raw[2]).toBe(0x05); // command not supported
      expect(rej.data.subarray(0, 1)[0]).toBe(0x1c);
    } finally {
      c.close();
    }
  });

  it('reinstates a session logged in again with the same ISID: the old connection is closed', async () => {
    const isid = Buffer.from([0x80, 1, 2, 3, 4, 5]);
    const a = await RawIscsiClient.connect(fx.port);
    await a.login(fx.sessionIqn, 'iqn.2026-12.org.rebound.test:reinstate', isid);
    const aClosed = closed(a);
    const b = await RawIscsiClient.connect(fx.port);
    try {
      await b.login(fx.sessionIqn, 'iqn.2026-12.org.rebound.test:reinstate', isid);
      await aClosed;
      const r = await b.command(read10(8, 8), { read: 4096 });
      expect(r.status).toBe(0);
    } finally {
      a.close();
      b.close();
    }
  });

  it('shares the daemon budget: commands larger than it run one at a time, and every byte comes back', async () => {
    const c = await RawIscsiClient.connect(fx.port);
    try {
      await c.login(fx.sessionIqn, 'iqn.2026-12.org.rebound.test:budget', Buffer.from([0x80, 0, 0, 0, 4, 2]));
      const reads = [0, 1, 2].map((i) => c.sendCommand(read10(i * 2048, 4096), { read: 2 * MiB }));
      const seen = new Map<number, number>();
      for (let n = 0; n < 200 && [...seen.values()].filter((v) => v === -1).length < reads.length; n++) {
        const p = await c.next();
        if (p.opcode === Op.DataIn) seen.set(p.itt, (seen.get(p.itt) ?? 0) + p.data.length);
        if (p.opcode === Op.DataIn && p.flags & 0x01) {
          expect(seen.get(p.itt)).toBe(2 * MiB);
          seen.set(p.itt, -1);
        }
      }
      expect([...seen.values()]).toEqual([-1, -1, -1]);
    } finally {
      c.close();
    }
    // The last bytes come back once the final Data-In's write callback ran: a few event-loop turns.
    for (let i = 0; i < 1000 && budget.used > 0; i++) await new Promise((r) => setImmediate(r));
    expect(budget.used).toBe(0);
    expect(budget.waiting).toBe(0);
  });

  it('ends the sessions of a disk that is unpublished (a discarded recovery session)', async () => {
    const own = await startIscsi({ sizes: [1 * MiB], pointSize: 1 * MiB });
    try {
      const c = await RawIscsiClient.connect(own.port);
      await c.login(own.sessionIqn);
      expect((await c.command(read10(0, 1), { read: 512 })).status).toBe(0);
      const gone = closed(c);
      await own.mem.removeSession('s1');
      await gone;
      const again = await RawIscsiClient.connect(own.port);
      await expect(again.login(own.sessionIqn)).rejects.toThrow(/status 0x203/);
      again.close();
    } finally {
      await own.close();
    }
  });

  it('drops a connection that does not log in within the login timeout, and limits connections per client', async () => {
    // A target of its own with a short login timeout (1 s): a silent connection is dropped; the
    // other tests' logins, on a loaded machine, get the default one.
    const own = await startIscsi({ sizes: [1 * MiB], pointSize: 1 * MiB, server: { loginTimeoutMs: 1000, maxConnectionsPerClient: 3 } });
    try {
      const idle = await RawIscsiClient.connect(own.port);
      await closed(idle);
      const held = await Promise.all([0, 1, 2].map(() => RawIscsiClient.connect(own.port)));
      try {
        for (const h of held) await h.login(own.pointIqn, 'iqn.2026-12.org.rebound.test:limit', Buffer.from([0x80, 0, 0, 9, 9, held.indexOf(h)]));
        const fourth = await RawIscsiClient.connect(own.port);
        await closed(fourth);
      } finally {
        for (const h of held) h.close();
      }
    } finally {
      await own.close();
    }
  });
});

const noQemu = missingPeers('qemu-img').length > 0;

describe.skipIf(noQemu)('CRC32C header digests with QEMU', () => {
  it('reads a LUN with header-digest=crc32c equal to its source', async () => {
    const dir = tempDir('rebound-iscsi-digest-');
    try {
      const file = path.join(dir, 'point.raw');
      fs.writeFileSync(file, fx.point);
      const opts = `driver=iscsi,transport=tcp,portal=127.0.0.1:${fx.port},target=${fx.pointIqn},lun=0,header-digest=crc32c`;
      await runOk('qemu-img', ['convert', '-O', 'raw', '--image-opts', opts, path.join(dir, 'copy.raw')]);
      expect(fs.readFileSync(path.join(dir, 'copy.raw')).equals(fx.point)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
