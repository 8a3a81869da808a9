/**
 * The iSCSI target with real initiators: libiscsi's tools (iscsi-ls, iscsi-inq, iscsi-readcapacity16)
 * and QEMU's iscsi block driver (qemu-img, qemu-io), against an in-process IscsiServer publishing a
 * recovery session (two writable memory disks) and a restore point (a read-only pattern disk).
 * CHAP: a second server requires one-way CHAP (and answers mutual CHAP); wrong secrets are refused.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/images.js';
import { INITIATOR, startIscsi, type IscsiFixture } from '../helpers/iscsi-fixture.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const missing = missingPeers('iscsi-ls', 'iscsi-inq', 'iscsi-readcapacity16', 'qemu-img', 'qemu-io');
const MiB = 1024 * 1024;
const CHAP = { user: 'hyperv-host', secret: 'secretof12chars', targetUser: 'rebound', targetSecret: 'targetsecret12' };

let fx: IscsiFixture;
let chapFx: IscsiFixture;
let dir: string;

beforeAll(async () => {
  if (missing.length) return;
  dir = tempDir('rebound-iscsi-');
  fx = await startIscsi({ sizes: [64 * MiB, 16 * MiB] });
  chapFx = await startIscsi({ sizes: [4 * MiB], chap: CHAP });
  fs.writeFileSync(path.join(dir, 'point.raw'), fx.point);
});

afterAll(async () => {
  await fx?.close();
  await chapFx?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const portal = (f: IscsiFixture, auth?: { user: string; secret: string }): string =>
  `iscsi://${auth ? `${auth.user}%${encodeURIComponent(auth.secret)}@` : ''}127.0.0.1:${f.port}`;

describe.skipIf(missing.length > 0)('iSCSI target with libiscsi and QEMU', () => {
  it('discovers every target with its LUNs (iscsi-ls)', async () => {
    const r = await runOk('iscsi-ls', ['-i', INITIATOR, '-s', portal(fx)]);
    expect(r.stdout).toContain(`Target:${fx.sessionIqn} Portal:127.0.0.1:${fx.port},1`);
    expect(r.stdout).toContain(`Target:${fx.pointIqn} Portal:127.0.0.1:${fx.port},1`);
    expect(r.stdout).toContain('Target:iqn.2026-12.org.rebound:point.vm1.latest');
    const session = r.stdout.split(`Target:${fx.sessionIqn}`)[1]!.split('Target:')[0]!;
    expect(session.match(/Lun:\d+\s+Type:DIRECT_ACCESS/g)).toHaveLength(2);
  });

  it('answers INQUIRY, every VPD page and READ CAPACITY(16) (iscsi-inq, iscsi-readcapacity16)', async () => {
    const url = fx.url(fx.sessionIqn, 1);
    const std = await runOk('iscsi-inq', ['-i', INITIATOR, url]);
    expect(std.stdout).toMatch(/CmdQue:1/);
    expect(std.stdout).toContain('Vendor:REBOUND');
    expect(std.stdout).toContain('Version Descriptor:0960 iSCSI');
    const pages = await runOk('iscsi-inq', ['-i', INITIATOR, '-e', '1', url]);
    for (const p of ['0x80', '0x83', '0xb0', '0xb1', '0xb2']) expect(pages.stdout).toContain(`Page:${p}`);
    const ids: string[] = [];
    for (const lun of [0, 1]) {
      const id = await runOk('iscsi-inq', ['-i', INITIATOR, '-e', '1', '-c', String(0x83), fx.url(fx.sessionIqn, lun)]);
      expect(id.stdout).toContain('Designator Type:(3) NAA');
      ids.push(/T10_VENDORT_ID\nDesignator:\[(.+)\]/.exec(id.stdout)![1]!);
    }
    expect(ids[0]).not.toBe(ids[1]);
    for (const [page, text] of [
      [0x80, 'Unit Serial Number:['],
      [0xb0, `maximum transfer length:${(32 * MiB) / 512}`],
      [0xb1, 'Medium Rotation Rate:1'], // 1: non-rotating medium
      [0xb2, 'lbpu:1'],
    ] as const) {
      const r = await runOk('iscsi-inq', ['-i', INITIATOR, '-e', '1', '-c', String(page), url]);
      expect(r.stdout).toContain(text);
    }
    const cap = await runOk('iscsi-readcapacity16', ['-i', INITIATOR, url]);
    expect(cap.stdout).toContain(`Total size:${16 * MiB}`);
    expect(cap.stdout).toContain('LBPME:1');
    const ro = await runOk('iscsi-readcapacity16', ['-i', INITIATOR, fx.url(fx.pointIqn, 0)]);
    expect(ro.stdout).toContain(`Total size:${fx.point.length}`);
    expect(ro.stdout).toContain('LBPME:0');
  });

  it('reads a restore point equal to its source, and refuses writes to it (qemu-img compare, qemu-io)', async () => {
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', path.join(dir, 'point.raw'), fx.url(fx.pointIqn, 0)]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 64k', fx.url(fx.pointIqn, 0)]);
    expect(`${w.stdout}${w.stderr}`).toMatch(/read-only|Permission denied|not permitted|protect/i);
    expect(fx.point[0]).not.toBe(0x11);
  });

  it('writes to a session LUN land on its disk and read back (qemu-io, qemu-img compare)', async () => {
    const url = fx.url(fx.sessionIqn, 0);
    const io = await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0xa5 1M 5M', '-c', 'write -z 2M 64k', '-c', 'discard 4M 1M', '-c', 'flush', '-c', 'read -P 0xa5 1M 1M', url]);
    expect(io.stdout).not.toMatch(/Pattern verification failed/);
    const got = Buffer.alloc(5 * MiB);
    await fx.disks[0]!.read(got, 1 * MiB);
    expect(got.subarray(0, MiB).every((b) => b === 0xa5)).toBe(true);
    expect(got.subarray(MiB, MiB + 64 * 1024).every((b) => b === 0)).toBe(true);
    // The whole disk as QEMU sees it equals the device's bytes.
    const whole = Buffer.alloc(64 * MiB);
    await fx.disks[0]!.read(whole, 0);
    fs.writeFileSync(path.join(dir, 'disk0.raw'), whole);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', path.join(dir, 'disk0.raw'), url]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    // A large sequential write goes through R2Ts (beyond FirstBurstLength) and several Data-In PDUs back.
    const big = await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 8M 12M', '-c', 'read -P 0x3c 8M 12M', url]);
    expect(big.stdout).not.toMatch(/Pattern verification failed/);
    const info = await runOk('qemu-img', ['info', '--output=json', url]);
    expect(JSON.parse(info.stdout)['virtual-size']).toBe(64 * MiB);
  });

  it('requires CHAP when configured: right secret in, wrong or none refused, mutual CHAP answered', async () => {
    const ok = await runOk('iscsi-ls', ['-i', INITIATOR, '-s', portal(chapFx, { user: CHAP.user, secret: CHAP.secret })]);
    expect(ok.stdout).toContain(`Target:${chapFx.sessionIqn}`);
    const none = await run('iscsi-ls', ['-i', INITIATOR, portal(chapFx)]);
    expect(none.code).not.toBe(0);
    const wrong = await run('iscsi-ls', ['-i', INITIATOR, portal(chapFx, { user: CHAP.user, secret: 'not-the-secret' })]);
    expect(wrong.code).not.toBe(0);
    expect(`${wrong.stdout}${wrong.stderr}`).toMatch(/fail|auth/i);
    // Mutual CHAP: libiscsi's target_user/target_password URL arguments make it challenge the target.
    const url = chapFx.url(chapFx.sessionIqn, 0, { user: CHAP.user, secret: CHAP.secret });
    const mutual = await run('iscsi-inq', ['-i', INITIATOR, `${url}?target_user=${CHAP.targetUser}&target_password=${CHAP.targetSecret}`]);
    expect(mutual.code, mutual.stderr).toBe(0);
    expect(mutual.stdout).toContain('Vendor:REBOUND');
    const badMutual = await run('iscsi-inq', ['-i', INITIATOR, `${url}?target_user=${CHAP.targetUser}&target_password=wrongtargetsecret`]);
    expect(badMutual.code).not.toBe(0);
    expect(badMutual.stderr).toContain('Invalid CHAP_R response from the target');
    const q = await run('qemu-img', ['info', '--output=json', url]);
    expect(q.code, q.stderr).toBe(0);
  });
});
