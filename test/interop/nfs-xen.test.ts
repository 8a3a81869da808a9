/**
 * The XenServer / XCP-ng storage-repository rendering of the NFS datastore with real clients, in a
 * private network namespace (the portmapper on 111): rpcinfo -s/-p/-l as XenServer's storage
 * manager runs them (nfs.py: `rpcinfo -s` must show "nfs", `rpcinfo -p` lines with "nfs" give
 * the versions), libnfs' nfs-ls/nfs-cp/nfs-cat on /xen/SR-UUID/VDI-UUID.raw, qemu-io writing the VDI, and
 * after a restart with nfsXenFormat=vhd qemu-img reading `<VDI>.vhd` as a fixed VHD (vpc).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { xenSrUuid, xenVdiUuid } from '../../src/nfs/xen-names.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { createNetNs, missingNetNs, type NetNs } from '../helpers/netns.js';
import { startNfsChild, type ChildConfig, type NfsChild } from '../helpers/nfs-fixture.js';
import { missingQemuNfs } from '../helpers/nfs-peers.js';
import { missingPeers } from '../helpers/peers.js';

const missing = [...missingPeers('nfs-ls', 'nfs-cat', 'nfs-cp', 'qemu-img', 'qemu-io', 'rpcinfo'), ...missingQemuNfs(), ...missingNetNs()];
const MiB = 1024 * 1024;
const CREATED = '2026-11-22T05:00:00Z';
const SR = xenSrUuid('vm1-rec', new Date(CREATED));
const VDI = xenVdiUuid('vm1-rec', new Date(CREATED), 'disk0');
let dir: string;
let ns: NetNs;
let server: NfsChild;
let baseSha: string;
let expected: Buffer;
const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const url = (p: string): string => `nfs://127.0.0.1${p}`;

function config(xenFormat: 'raw' | 'vhd'): ChildConfig {
  return {
    stateDir: path.join(dir, 'state'),
    nfs: '127.0.0.1:2049',
    portmap: '127.0.0.1:111',
    xenFormat,
    sessions: [
      {
        name: 'vm1-rec',
        vm: 'vm1',
        pointId: '20261122T034000Z',
        createdAt: CREATED,
        dir: path.join(dir, 'sessions/vm1-rec'),
        disks: [{ name: 'disk0', base: path.join(dir, 'base.raw'), overlay: path.join(dir, 'sessions/vm1-rec/overlay-disk0') }],
      },
    ],
  };
}

beforeAll(async () => {
  if (missing.length) return;
  dir = tempDir('rebound-nfs-xen-');
  expected = makeImage(path.join(dir, 'base.raw'), standardLayout(16 * MiB));
  baseSha = sha(path.join(dir, 'base.raw'));
  ns = await createNetNs();
  server = await startNfsChild(config('raw'), path.join(dir, 'server.json'), ns);
}, 60_000);

afterAll(async () => {
  if (missing.length) return;
  await server?.stop('SIGKILL');
  await ns?.close();
  if (!process.env.REBOUND_KEEP) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(missing.length > 0)('NFS storage repository for XenServer with rpcinfo, libnfs and QEMU', () => {
  it("rpcinfo answers the storage manager's checks: -s (rpcbind v3/v4) shows nfs v3 on tcp, -p (v2) lists version 3, -l gives the universal address", async () => {
    const s = await ns.runOk('rpcinfo', ['-s', '127.0.0.1']);
    // nfs.check_server_service: some line has "nfs" past its first character.
    expect(s.stdout.split('\n').some((l) => l.indexOf('nfs') > 0)).toBe(true);
    expect(s.stdout).toMatch(/100003\s+3\s+tcp\s+nfs/);
    expect(s.stdout).toMatch(/100005\s+3\s+tcp\s+mountd/);
    expect(s.stdout).toMatch(/nfs\s+superuser/); // the owner column comes only from rpcbind v3/v4 DUMP
    expect(s.stdout).toMatch(/100000\s+2,3,4\s+\S*tcp/);
    // nfs.get_supported_nfs_versions: column 2 of the lines that mention nfs.
    const p = await ns.runOk('rpcinfo', ['-p', '127.0.0.1']);
    const versions = new Set(p.stdout.split('\n').filter((l) => l.indexOf('nfs') > 0).map((l) => l.trim().split(/\s+/)[1]));
    expect([...versions]).toEqual(['3']);
    const l = await ns.runOk('rpcinfo', ['-l', '127.0.0.1', '100003', '3']);
    expect(l.stdout).toMatch(/100003\s+3\s+inet\/tcp\/cots_ord\s+127\.0\.0\.1\.8\.1/); // port 2049 = 8*256+1
    for (const [vers, tp] of [['4', 'tcp'], ['3', 'udp'], ['2', 'udp']]) {
      const ping = await ns.runOk('rpcinfo', ['-T', tp!, '127.0.0.1', '100000', vers!]);
      expect(ping.stdout).toContain(`program 100000 version ${vers} ready and waiting`);
    }
  });

  it('nfs-ls lists /xen with one SR folder per session (sr-probe) and the VDI as <uuid>.raw; nfs-cp copies it byte for byte', async () => {
    expect((await ns.runOk('nfs-ls', [url('/xen')])).stdout).toMatch(new RegExp(`^d.* ${SR}$`, 'm'));
    expect((await ns.runOk('nfs-ls', [url(`/xen/${SR}`)])).stdout).toMatch(new RegExp(`^-rw.*\\s16777216 ${VDI}\\.raw$`, 'm'));
    const copy = path.join(dir, 'vdi-copy.raw');
    await ns.runOk('nfs-cp', [url(`/xen/${SR}/${VDI}.raw`), copy]);
    expect(fs.readFileSync(copy).equals(expected)).toBe(true);
  });

  it('nfs-cp writes a file into the SR folder (the SR keeps its own files beside the VDIs)', async () => {
    const local = path.join(dir, 'sm-hardlink.conf');
    fs.writeFileSync(local, '0');
    await ns.runOk('nfs-cp', [local, url(`/xen/${SR}/sm-hardlink.conf`)]);
    expect(fs.readFileSync(path.join(dir, 'sessions/vm1-rec/xen/sm-hardlink.conf'), 'utf8')).toBe('0');
    expect((await ns.runOk('nfs-ls', [url(`/xen/${SR}`)])).stdout).toMatch(/sm-hardlink\.conf/);
    expect((await ns.runOk('nfs-cat', [url(`/xen/${SR}/sm-hardlink.conf`)])).stdout).toBe('0');
    // The VDI itself cannot be created over.
    expect((await ns.run('nfs-cp', [local, url(`/xen/${SR}/${VDI}.raw`)])).code).not.toBe(0);
  });

  it('qemu-io writes through the VDI into the session overlay; the VMware view of the same disk reads them; the base is unchanged', async () => {
    const vdi = url(`/xen/${SR}/${VDI}.raw`);
    const w = await ns.runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 2M 128k', '-c', 'write -P 0x3c 15M 4k', '-c', 'flush', vdi]);
    expect(w.stdout).toContain('wrote 131072/131072 bytes at offset 2097152');
    const r = await ns.runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 2M 128k', '-c', 'read -P 0x3c 15M 4k', url('/sessions/vm1-rec/disk0-flat.vmdk')]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(r.stdout).toContain('read 131072/131072 bytes at offset 2097152');
    expect(sha(path.join(dir, 'base.raw'))).toBe(baseSha);
  });

  it('after a restart with nfsXenFormat=vhd: the same SR, the VDI as a fixed VHD that qemu-img reads (vpc) with the right size and data', async () => {
    await server.stop('SIGTERM');
    server = await startNfsChild(config('vhd'), path.join(dir, 'server.json'), ns);
    const vhd = url(`/xen/${SR}/${VDI}.vhd`);
    expect((await ns.runOk('nfs-ls', [url(`/xen/${SR}`)])).stdout).toMatch(new RegExp(`\\s${16 * MiB + 512} ${VDI}\\.vhd$`, 'm'));
    const info = JSON.parse((await ns.runOk('qemu-img', ['info', '--output=json', '-f', 'vpc', vhd])).stdout);
    expect(info).toMatchObject({ format: 'vpc', 'virtual-size': 16 * MiB });
    const cmp = await ns.run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', vhd, url('/sessions/vm1-rec/disk0-flat.vmdk')]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
    const r = await ns.runOk('qemu-io', ['-f', 'vpc', '-c', 'read -P 0x5a 2M 128k', vhd]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    const local = path.join(dir, 'vdi.vhd');
    await ns.runOk('nfs-cp', [vhd, local]);
    expect(JSON.parse((await ns.runOk('qemu-img', ['info', '--output=json', '-f', 'vpc', local])).stdout)['virtual-size']).toBe(16 * MiB);
    expect(fs.readFileSync(local).subarray(16 * MiB, 16 * MiB + 8).toString('latin1')).toBe('conectix');
  });
});
