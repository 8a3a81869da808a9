/**
 * The NFS datastore with real clients, all inside a private network namespace (QEMU and libnfs ask
 * the portmapper on port 111): libnfs' nfs-ls, nfs-cat and nfs-cp (read and write), qemu-img
 * info/convert/compare and qemu-io on nfs:// URLs. Sessions are CowOverlays over a raw base; the
 * base must never change. The whole conversation is captured with tshark on the namespace's
 * loopback and must decode with zero malformed frames (Wireshark's NFS, MOUNT and PORTMAP
 * dissectors are an implementation nobody on this project wrote).
 */
import type { ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { createNetNs, missingNetNs, type NetNs } from '../helpers/netns.js';
import { startNfsChild, type NfsChild } from '../helpers/nfs-fixture.js';
import { missingQemuNfs } from '../helpers/nfs-peers.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';

const missing = [...missingPeers('nfs-ls', 'nfs-cat', 'nfs-cp', 'qemu-img', 'qemu-io', 'tshark', 'rpcinfo'), ...missingQemuNfs(), ...missingNetNs()];
const MiB = 1024 * 1024;
const POINT = '20261122T034000Z';
const VMX = 'displayName = "vm1"\nscsi0:0.fileName = "disk0.vmdk"\n';
let dir: string;
let ns: NetNs;
let server: NfsChild;
let tshark: ChildProcess | undefined;
let baseSha: string;
let expected: Buffer;
const pcap = (): string => path.join(dir, 'nfs.pcap');
const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const url = (p: string): string => `nfs://127.0.0.1${p}`;

beforeAll(async () => {
  if (missing.length) return;
  dir = tempDir('rebound-nfs-');
  expected = makeImage(path.join(dir, 'base.raw'), standardLayout(16 * MiB));
  baseSha = sha(path.join(dir, 'base.raw'));
  ns = await createNetNs();
  tshark = ns.spawn('tshark', ['-i', 'lo', '-B', '64', '-q', '-w', pcap()], { stdio: ['ignore', 'ignore', 'pipe'] });
  let said = '';
  tshark.stderr!.setEncoding('utf8').on('data', (d: string) => (said += d));
  for (let i = 0; i < 200 && !said.includes('Capturing on'); i++) await new Promise((r) => setTimeout(r, 50));
  server = await startNfsChild(
    {
      stateDir: path.join(dir, 'state'),
      nfs: '127.0.0.1:2049',
      portmap: '127.0.0.1:111',
      sessions: [
        {
          name: 'vm1-rec',
          vm: 'vm1',
          pointId: POINT,
          createdAt: '2026-11-22T05:00:00Z',
          dir: path.join(dir, 'sessions/vm1-rec'),
          disks: [{ name: 'disk0', base: path.join(dir, 'base.raw'), overlay: path.join(dir, 'sessions/vm1-rec/overlay-disk0') }],
        },
      ],
      points: [{ vm: 'vm1', id: POINT, createdAt: '2026-11-22T03:40:00Z', disks: [{ name: 'disk0', file: path.join(dir, 'base.raw') }], configs: { 'vm1.vmx': VMX } }],
    },
    path.join(dir, 'server.json'),
    ns,
  );
}, 60_000);

afterAll(async () => {
  if (missing.length) return;
  await server?.stop('SIGKILL');
  tshark?.kill('SIGKILL');
  await ns?.close();
  if (!process.env.REBOUND_KEEP) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(missing.length > 0)('NFS datastore with libnfs and QEMU clients', () => {
  it('rpcinfo finds MOUNT v3 and NFS v3 on TCP through the portmapper (-p: UDP DUMP, -s: TCP)', async () => {
    const p = await ns.runOk('rpcinfo', ['-p', '127.0.0.1']);
    expect(p.stdout).toMatch(/100005\s+3\s+tcp\s+2049/);
    expect(p.stdout).toMatch(/100003\s+3\s+tcp\s+2049/);
    const t = await ns.runOk('rpcinfo', ['-T', 'tcp', '127.0.0.1', '100003', '3']);
    expect(t.stdout).toContain('program 100003 version 3 ready and waiting');
  });

  it('nfs-ls lists the tree: sessions, backups, a session folder with descriptor, flat disk and config', async () => {
    const root = await ns.runOk('nfs-ls', [url('/')]);
    expect(root.stdout).toMatch(/sessions/);
    expect(root.stdout).toMatch(/backups/);
    const s = await ns.runOk('nfs-ls', [url('/sessions/vm1-rec')]);
    expect(s.stdout).toMatch(/\s16777216 disk0-flat\.vmdk/);
    expect(s.stdout).toMatch(/disk0\.vmdk/);
    expect(s.stdout).toMatch(/vm1\.vmx/);
    const b = await ns.runOk('nfs-ls', [url(`/backups/vm1/${POINT}`)]);
    expect(b.stdout).toMatch(/r--r--r--.*disk0-flat\.vmdk/);
    const summary = await ns.runOk('nfs-ls', ['-s', url('/sessions/vm1-rec')]); // + FSSTAT
    expect(summary.stdout).toMatch(/disk0-flat\.vmdk/);
    const missingDir = await ns.run('nfs-ls', [url('/sessions/nope')]);
    expect(missingDir.code).not.toBe(0);
  });

  it('nfs-cat reads the generated descriptor and the config stored with the backup', async () => {
    const d = await ns.runOk('nfs-cat', [url('/sessions/vm1-rec/disk0.vmdk')]);
    expect(d.stdout).toContain(`RW ${(16 * MiB) / 512} VMFS "disk0-flat.vmdk"`);
    expect(d.stdout).toContain('createType="vmfs"');
    const c = await ns.runOk('nfs-cat', [url(`/backups/vm1/${POINT}/vm1.vmx`)]);
    expect(c.stdout).toBe(VMX);
  });

  it('nfs-cp copies the session disk and the restore point byte for byte', async () => {
    for (const [p, local] of [['/sessions/vm1-rec/disk0-flat.vmdk', 'copy-session.raw'], [`/backups/vm1/${POINT}/disk0-flat.vmdk`, 'copy-point.raw']] as const) {
      await ns.runOk('nfs-cp', [url(p), path.join(dir, local)]);
      expect(fs.readFileSync(path.join(dir, local)).equals(expected), local).toBe(true);
    }
  });

  it('nfs-cp writes a new file into the session folder (CREATE GUARDED, SETATTR, WRITE, COMMIT)', async () => {
    const local = path.join(dir, 'vmware.log');
    const text = Buffer.from('2026-11-22T05:00:00.000Z In(05) vmx - Log for VMware ESX\n'.repeat(30000)); // ~1.7 MiB: several WRITEs
    fs.writeFileSync(local, text);
    await ns.runOk('nfs-cp', [local, url('/sessions/vm1-rec/vmware.log')]);
    expect(fs.readFileSync(path.join(dir, 'sessions/vm1-rec/nfs/vmware.log')).equals(text)).toBe(true);
    const back = path.join(dir, 'vmware-back.log');
    await ns.runOk('nfs-cp', [url('/sessions/vm1-rec/vmware.log'), back]);
    expect(fs.readFileSync(back).equals(text)).toBe(true);
    // A second GUARDED create of the same name fails cleanly; the backups tree is read-only.
    expect((await ns.run('nfs-cp', [local, url('/sessions/vm1-rec/vmware.log')])).code).not.toBe(0);
    const ro = await ns.run('nfs-cp', [local, url(`/backups/vm1/${POINT}/x.log`)]);
    expect(ro.code).not.toBe(0);
    expect(ro.stderr + ro.stdout).toMatch(/ROFS|read-only|Read-only/i);
  });

  it('qemu-img info, compare and convert work on nfs:// URLs', async () => {
    const flat = url('/sessions/vm1-rec/disk0-flat.vmdk');
    const info = JSON.parse((await ns.runOk('qemu-img', ['info', '--output=json', '-f', 'raw', flat])).stdout);
    expect(info['virtual-size']).toBe(16 * MiB);
    const cmp = await ns.run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', url(`/backups/vm1/${POINT}/disk0-flat.vmdk`), path.join(dir, 'base.raw')]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
    const out = path.join(dir, 'converted.raw');
    await ns.runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', flat, out]);
    expect(fs.readFileSync(out).equals(expected)).toBe(true);
  });

  it('qemu-io writes land in the overlay: read back through NFS, the backup and the base stay unchanged', async () => {
    const flat = url('/sessions/vm1-rec/disk0-flat.vmdk');
    const w = await ns.runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 3M 256k', '-c', 'write -P 0xcd 5000 1000', '-c', 'flush', flat]);
    expect(w.stdout).toContain('wrote 262144/262144 bytes at offset 3145728');
    const r = await ns.runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 3M 256k', '-c', 'read -P 0xcd 5000 1000', flat]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(r.stdout).toContain('read 262144/262144 bytes at offset 3145728');
    const cmp = await ns.run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', url(`/backups/vm1/${POINT}/disk0-flat.vmdk`), path.join(dir, 'base.raw')]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
    const diff = await ns.run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', flat, path.join(dir, 'base.raw')]);
    expect(Number(/Content mismatch at offset (\d+)!/.exec(diff.stdout)?.[1])).toBeLessThanOrEqual(5000);
    expect(sha(path.join(dir, 'base.raw'))).toBe(baseSha);
  });

  it('qemu-img creates a qcow2 snapshot file in the session folder and qemu-io writes through it', async () => {
    const snap = url('/sessions/vm1-rec/vm1-000001.qcow2');
    await ns.runOk('qemu-img', ['create', '-f', 'qcow2', '-b', url('/sessions/vm1-rec/disk0-flat.vmdk'), '-F', 'raw', snap]);
    const info = JSON.parse((await ns.runOk('qemu-img', ['info', '--output=json', snap])).stdout);
    expect(info).toMatchObject({ format: 'qcow2', 'virtual-size': 16 * MiB });
    await ns.runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 8M 64k', snap]);
    const r = await ns.runOk('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x77 8M 64k', '-c', 'read -P 0xab 3M 256k', snap]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(fs.statSync(path.join(dir, 'sessions/vm1-rec/nfs/vm1-000001.qcow2')).size).toBeGreaterThan(64 * 1024);
  });

  it('the captured traffic decodes with zero malformed frames', async () => {
    await new Promise((r) => setTimeout(r, 300));
    const stopped = new Promise((r) => tshark!.once('exit', r));
    tshark!.kill('SIGINT');
    await stopped;
    tshark = undefined;
    // As root, libnfs binds privileged source ports, some of which Wireshark assigns to other
    // protocols (DLEP on 854, ...): let the RPC heuristics decide first.
    const decode = ['-r', pcap(), '-o', 'tcp.try_heuristic_first:TRUE', '-d', 'tcp.port==2049,rpc', '-d', 'tcp.port==111,rpc'];
    const malformed = await runOk('tshark', [...decode, '-Y', '_ws.malformed || _ws.expert.severity == error']);
    expect(malformed.stdout.trim()).toBe('');
    const procs = await runOk('tshark', [...decode, '-Y', 'rpc.msgtyp == 1', '-T', 'fields', '-e', 'rpc.program', '-e', 'rpc.procedure']);
    const seen = new Set(procs.stdout.trim().split('\n'));
    for (const want of ['100000\t3', '100005\t1', '100005\t5', '100003\t1', '100003\t3', '100003\t6', '100003\t7', '100003\t8', '100003\t17', '100003\t18', '100003\t19', '100003\t21']) {
      expect(seen, `reply to program/procedure ${want}`).toContain(want);
    }
  });
});
