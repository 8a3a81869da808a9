/**
 * Persistent reservations of a recovery session's disk survive a crash of the daemon when the
 * initiator asked for it (APTPL): node A registers with APTPL=1 and takes a write-exclusive,
 * registrants-only reservation over iSCSI (raw PDUs: libiscsi's suite does not set APTPL); the
 * daemon is killed with SIGKILL and started again; A logs in again with the same initiator name
 * and ISID and finds its key and reservation, writes, and node B (not registered) is refused
 * writes with RESERVATION CONFLICT. Discarding the session removes the saved state with it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Status } from '../../src/iscsi/sense.js';
import { cli } from '../helpers/cli.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { prOut, RawIscsiClient } from '../helpers/iscsi-raw.js';

const MiB = 1024 * 1024;
const WERO = 5;
const IQN = 'iqn.2026-12.org.rebound:session.web1-rec';
const NODE_A = 'iqn.1991-05.com.microsoft:node-a';
const NODE_B = 'iqn.1991-05.com.microsoft:node-b';
const ISID = Buffer.from([0x40, 0x00, 0x01, 0x37, 0x00, 0x00]);

const write10 = (lba: number): Buffer => Buffer.from([0x2a, 0, 0, 0, (lba >> 8) & 0xff, lba & 0xff, 0, 0, 1, 0]);

describe('persistent reservations of a session disk across a daemon crash (APTPL)', () => {
  let dir: string;
  let daemon: DaemonProcess | undefined;
  const args = (): string[] => ['--data', path.join(dir, 'data'), '--nbd', 'none', '--http', '127.0.0.1:0', '--iscsi', '127.0.0.1:0'];
  const port = (): number => Number(/iSCSI: portal at 127\.0\.0\.1:(\d+)/.exec(daemon!.stdout())![1]);
  const rb = async (...a: string[]) => {
    const r = await cli(['--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, ...a]);
    expect(r.code, r.stderr).toBe(0);
    return r;
  };
  const login = async (initiator: string): Promise<RawIscsiClient> => {
    const c = await RawIscsiClient.connect(port());
    await c.login(IQN, initiator, ISID);
    return c;
  };

  beforeAll(async () => {
    dir = tempDir('rebound-iscsi-pr-');
    makeImage(path.join(dir, 'disk.raw'), standardLayout(8 * MiB));
    daemon = await startDaemonProcess(args());
    await rb('backup', 'web1', '--disk', `disk0=${path.join(dir, 'disk.raw')}`);
    await rb('recover', 'web1', '--name', 'web1-rec');
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop('SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps the registration and reservation after kill -9 and a restart; discard removes them', async () => {
    let a = await login(NODE_A);
    const reg = prOut(0, 0n, 0xc1a55n, 0, 0x01);
    expect((await a.command(reg.cdb, { dataOut: reg.dataOut })).status).toBe(Status.Good);
    const res = prOut(1, 0xc1a55n, 0n, WERO);
    expect((await a.command(res.cdb, { dataOut: res.dataOut })).status).toBe(Status.Good);
    a.close();
    const file = path.join(dir, 'data', 'sessions', 'web1-rec', 'iscsi', 'disk0.pr.json');
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toMatchObject({ version: 1, registrations: [{ initiatorName: NODE_A, key: String(0xc1a55) }], reservation: { type: WERO } });

    await daemon!.stop('SIGKILL');
    daemon = await startDaemonProcess(args());

    a = await login(NODE_A);
    const b = await login(NODE_B);
    try {
      const r = await a.command(Buffer.from([0x5e, 1, 0, 0, 0, 0, 0, 0, 32, 0]), { read: 32 });
      expect([r.data.readBigUInt64BE(8), r.data[21]]).toEqual([0xc1a55n, WERO]);
      const caps = await a.command(Buffer.from([0x5e, 2, 0, 0, 0, 0, 0, 0, 8, 0]), { read: 8 });
      expect([caps.data[2]! & 1, caps.data[3]! & 1]).toEqual([1, 1]); // PTPL_C, PTPL_A
      expect((await a.command(write10(8), { dataOut: Buffer.alloc(512, 0xa) })).status).toBe(Status.Good);
      expect((await b.command(write10(9), { dataOut: Buffer.alloc(512, 0xb) })).status).toBe(Status.ReservationConflict);
      expect((await b.command(Buffer.from([0x28, 0, 0, 0, 0, 9, 0, 0, 1, 0]), { read: 512 })).status).toBe(Status.Good); // write exclusive: reads pass
    } finally {
      a.close();
      b.close();
    }
    await rb('discard', 'web1-rec');
    expect(fs.existsSync(file)).toBe(false);
  }, 120_000);
});
