/**
 * The NFS datastore in the real daemon process: `rebound serve --nfs 127.0.0.1:0 --portmap off`
 * publishes a restore point made with `rebound backup` under /backups; a file handle obtained
 * before a restart of the daemon (graceful, and kill -9) still reads the same data after it, with
 * the same file id. `rebound recover --no-nbd` publishes a session folder whose disk and lock-file
 * handles survive kill -9 (with the FILE_SYNC data written through them); `rebound discard` removes
 * it and its handles go STALE. Clients talk to the port directly (libnfs' ?nfsport=&mountport=), so
 * nothing here needs the portmapper or a network namespace.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/cli.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { nfsUrl } from '../helpers/nfs-fixture.js';
import { RpcTestClient, type m } from '../helpers/nfs-rpc.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';
import { xenSrUuid, xenVdiUuid } from '../../src/nfs/xen-names.js';

const missing = missingPeers('nfs-ls', 'nfs-cat');
const MiB = 1024 * 1024;
let dir: string;
let daemon: DaemonProcess | undefined;
let expected: Buffer;

const args = (): string[] => ['--data', path.join(dir, 'data'), '--nbd', 'none', '--http', '127.0.0.1:0', '--nfs', '127.0.0.1:0', '--portmap', 'off'];
const nfsPort = (d: DaemonProcess): number => Number(/NFS: datastore at 127\.0\.0\.1:(\d+)/.exec(d.stdout())?.[1]);

beforeAll(async () => {
  if (missing.length) return;
  dir = tempDir('rebound-nfs-daemon-');
  expected = makeImage(path.join(dir, 'disk.raw'), standardLayout(12 * MiB));
  daemon = await startDaemonProcess(args());
}, 30_000);

afterAll(async () => {
  await daemon?.stop('SIGKILL');
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(missing.length > 0)('NFS datastore in the daemon process', () => {
  it('serves a backed-up restore point; handles survive graceful and kill -9 restarts', async () => {
    expect(daemon!.stdout()).toMatch(/NFS: datastore at 127\.0\.0\.1:\d+ \(portmapper off\)/);
    const health = (await (await fetch(`http://${daemon!.http}/v1/health`)).json()) as { endpoints: { nfs?: string[]; portmap?: string[] } };
    expect(health.endpoints).toMatchObject({ nfs: [`127.0.0.1:${nfsPort(daemon!)}`], portmap: [] });
    const status = await cli(['--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, 'status']);
    expect(status.stdout).toContain(`NFS:  127.0.0.1:${nfsPort(daemon!)} (portmapper off)`);
    const b = await cli(['--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, 'backup', 'web1', '--disk', `disk0=${path.join(dir, 'disk.raw')}`, '--json']);
    expect(b.code, b.stderr).toBe(0);
    const point = JSON.parse(b.stdout).result.id as string;

    let port = nfsPort(daemon!);
    const ls = await runOk('nfs-ls', [nfsUrl(`/backups/web1/${point}`, port)]);
    expect(ls.stdout).toMatch(new RegExp(`${12 * MiB} disk0-flat\\.vmdk`));

    let c = await RpcTestClient.connect(port);
    const root = (await c.mount('/')).fh!;
    const fh = await c.lookupPath(root, `backups/web1/${point}/disk0-flat.vmdk`);
    const before = await c.getattr(fh);
    const read = async (client: RpcTestClient): Promise<m.Nfsv3ReadResponse> => client.read(fh, 4 * MiB, 1 * MiB);
    expect(Buffer.from((await read(c)).resok!.data).equals(expected.subarray(4 * MiB, 5 * MiB))).toBe(true);
    c.close();

    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      await daemon!.stop(signal);
      daemon = await startDaemonProcess(args());
      port = nfsPort(daemon);
      c = await RpcTestClient.connect(port);
      const after = await c.getattr(fh); // no MNT, no LOOKUP: the old handle as it was
      expect(after.status, `after ${signal}`).toBe(0);
      expect(after.resok!.objAttributes.fileid).toBe(before.resok!.objAttributes.fileid);
      const r = await read(c);
      expect(r.status).toBe(0);
      expect(Buffer.from(r.resok!.data).equals(expected.subarray(4 * MiB, 5 * MiB))).toBe(true);
      c.close();
    }
    const cat = await runOk('nfs-cat', [nfsUrl(`/backups/web1/${point}/disk0.vmdk`, port)]);
    expect(cat.stdout).toContain(`RW ${(12 * MiB) / 512} VMFS "disk0-flat.vmdk"`);
  });

  it('recover --no-nbd publishes a session folder; its handles survive kill -9; discard makes them STALE', async () => {
    let server = `http://${daemon!.http}`;
    const r = await cli(['--server', server, '--token-file', daemon!.tokenFile, 'recover', 'web1', '--name', 'web1-rec', '--no-nbd', '--json']);
    expect(r.code, r.stderr).toBe(0);
    let port = nfsPort(daemon!);
    // The same disk as a XenServer SR: the API's path and VDI file, which the daemon serves.
    const created = new Date(JSON.parse(r.stdout).createdAt as string);
    const xen = JSON.parse(r.stdout).xen as { srUuid: string; path: string; servers: string[]; vdis: Array<{ disk: string; uuid: string; file: string }> };
    expect(xen).toEqual({
      servers: [`127.0.0.1:${port}`],
      srUuid: xenSrUuid('web1-rec', created),
      path: `/xen/${xenSrUuid('web1-rec', created)}`,
      vdis: [{ disk: 'disk0', uuid: xenVdiUuid('web1-rec', created, 'disk0'), file: `${xenVdiUuid('web1-rec', created, 'disk0')}.raw` }],
    });
    expect((await runOk('nfs-ls', [nfsUrl(xen.path, port)])).stdout).toMatch(new RegExp(`${12 * MiB} ${xen.vdis[0]!.file}`));
    const shown = await cli(['--server', server, '--token-file', daemon!.tokenFile, 'sessions', 'web1-rec']);
    expect(shown.stdout).toContain(`XenServer: NFS SR ${xen.srUuid} at 127.0.0.1:${port}, serverpath /xen`);
    expect(shown.stdout).toContain(`VDI ${xen.vdis[0]!.uuid}: disk disk0  ${xen.path}/${xen.vdis[0]!.file}`);
    const ls = await runOk('nfs-ls', [nfsUrl('/sessions/web1-rec', port)]);
    expect(ls.stdout).toMatch(new RegExp(`${12 * MiB} disk0-flat\\.vmdk`));
    expect(ls.stdout).toMatch(/disk0\.vmdk/);
    let c = await RpcTestClient.connect(port);
    const root = (await c.mount('/')).fh!;
    const folder = await c.lookupPath(root, 'sessions/web1-rec');
    const flat = await c.lookupPath(folder, 'disk0-flat.vmdk');
    const lck = Buffer.from((await c.create(folder, '.lck-0100000000000000', 1)).resok!.obj.handle!.data);
    expect((await c.write(lck, 0, Buffer.from('esxi-01\n'), 2)).status).toBe(0);
    expect((await c.write(flat, 1 * MiB, Buffer.alloc(8192, 0xee), 2)).resok!.committed).toBe(2);
    const want = Buffer.concat([expected.subarray(1 * MiB - 4096, 1 * MiB), Buffer.alloc(8192, 0xee), expected.subarray(1 * MiB + 8192, 1 * MiB + 12288)]);
    expect(Buffer.from((await c.read(flat, 1 * MiB - 4096, 16384)).resok!.data).equals(want)).toBe(true);
    const ids = [(await c.getattr(flat)).resok!.objAttributes.fileid, (await c.getattr(lck)).resok!.objAttributes.fileid];
    const vdi = await c.lookupPath(root, `${xen.path}/${xen.vdis[0]!.file}`);
    c.close();

    await daemon!.stop('SIGKILL'); // FILE_SYNC writes were acknowledged: they must survive
    daemon = await startDaemonProcess(args());
    server = `http://${daemon.http}`;
    port = nfsPort(daemon);
    c = await RpcTestClient.connect(port);
    const after = [await c.getattr(flat), await c.getattr(lck)];
    expect(after.map((a) => a.status)).toEqual([0, 0]);
    expect(after.map((a) => a.resok!.objAttributes.fileid)).toEqual(ids);
    expect(Buffer.from((await c.read(flat, 1 * MiB - 4096, 16384)).resok!.data).equals(want)).toBe(true);
    expect(Buffer.from((await c.read(lck, 0, 100)).resok!.data).toString()).toBe('esxi-01\n');
    expect(Buffer.from((await c.read(vdi, 1 * MiB - 4096, 16384)).resok!.data).equals(want)).toBe(true); // the VDI's handle too

    const d = await cli(['--server', server, '--token-file', daemon!.tokenFile, 'discard', 'web1-rec']);
    expect(d.code, d.stderr).toBe(0);
    expect((await c.getattr(flat)).status).toBe(70); // NFS3ERR_STALE
    expect((await c.getattr(lck)).status).toBe(70);
    expect((await c.getattr(vdi)).status).toBe(70);
    c.close();
  });
});
