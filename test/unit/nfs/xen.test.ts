/**
 * The XenServer storage-repository rendering of the NFS datastore (/xen/SR/VDI.raw|.vhd): stable
 * name-based UUIDs, the fixed-VHD footer, and what XenServer's storage manager does when it
 * attaches an NFS SR (FileSR.SharedFileSR: a test file created and removed, a hard link tried —
 * NFS3ERR_NOTSUPP, which the kernel turns into errno 524 that sm handles — and sm-hardlink.conf
 * written), over raw NFS calls to an in-process server. Real clients: test/interop/nfs-xen.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chsGeometry, vhdFooter } from '../../../src/nfs/datastore/vhd-footer.js';
import { Nfs3Stat } from '../../../src/nfs/error-map.js';
import { uuid5, xenSrUuid, xenVdiUuid } from '../../../src/nfs/xen-names.js';
import { tempDir } from '../../helpers/images.js';
import { SESSION_DISK_BYTES, startInProcess, type InProcess } from '../../helpers/nfs-fixture.js';
import { entryNames as allNames, m, RpcTestClient, st } from '../../helpers/nfs-rpc.js';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';

const names = (r: m.Nfsv3ReaddirplusResponse): string[] => allNames(r).filter((n) => n !== '.' && n !== '..');

describe('Xen names', () => {
  it('uuid5 is RFC 9562 version 5 (the Python uuid module agrees)', () => {
    expect(uuid5('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'python.org')).toBe('886313e1-3b8a-5372-9b90-0c9aee199e5d');
  });

  it('SR and VDI UUIDs depend on the session name, its creation time and the disk', () => {
    const t = new Date('2026-11-22T05:00:00Z');
    const sr = xenSrUuid('s1', t);
    expect(sr).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(xenSrUuid('s1', t)).toBe(sr);
    expect(xenSrUuid('s1', new Date(t.getTime() + 1))).not.toBe(sr);
    expect(xenSrUuid('s2', t)).not.toBe(sr);
    expect(xenVdiUuid('s1', t, 'disk0')).not.toBe(xenVdiUuid('s1', t, 'disk1'));
    expect(xenVdiUuid('s1', t, 'disk0')).not.toBe(sr);
  });
});

describe('vhdFooter', () => {
  it('is a fixed-disk footer with creator tap, both sizes, the UUID and a valid checksum', () => {
    const uuid = '271ac5a3-1261-5193-805c-b65658343d20';
    const f = vhdFooter(16 * 1024 * 1024, uuid, new Date('2026-11-22T05:00:00Z'));
    expect(f.length).toBe(512);
    expect(f.toString('latin1', 0, 8)).toBe('conectix');
    expect(f.toString('latin1', 28, 32)).toBe('tap\0');
    expect(f.readBigUInt64BE(16)).toBe(0xffffffffffffffffn);
    expect(f.readBigUInt64BE(40)).toBe(16n * 1024n * 1024n);
    expect(f.readBigUInt64BE(48)).toBe(16n * 1024n * 1024n);
    expect(f.readUInt32BE(60)).toBe(2);
    expect(f.subarray(68, 84).toString('hex')).toBe(uuid.replace(/-/g, ''));
    expect(f.readUInt32BE(24)).toBe(Math.floor((Date.parse('2026-11-22T05:00:00Z') - Date.UTC(2000, 0, 1)) / 1000));
    const copy = Buffer.from(f);
    copy.writeUInt32BE(0, 64);
    let sum = 0;
    for (const b of copy) sum += b;
    expect(f.readUInt32BE(64)).toBe(~sum >>> 0);
  });

  it('geometry follows the spec: 16 MiB is 481/4/17, huge disks saturate at 65535/16/255', () => {
    expect(chsGeometry(16 * 1024 * 1024)).toEqual({ cylinders: 481, heads: 4, sectors: 17 });
    expect(chsGeometry(4 * 1024 ** 4)).toEqual({ cylinders: 65535, heads: 16, sectors: 255 });
  });
});

describe('the /xen folder of an in-process server', () => {
  let dir: string;
  let srv: InProcess;
  let c: RpcTestClient;
  let sr: string;
  let vdi: string;

  const start = async (xenFormat: 'raw' | 'vhd' | 'off' = 'raw'): Promise<void> => {
    srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'), { xenFormat });
    c = await RpcTestClient.connect(srv.port);
  };
  const stop = async (): Promise<void> => {
    c?.close();
    await srv?.close();
  };

  beforeEach(() => {
    dir = tempDir('rebound-nfs-xen-');
    const t = new Date('2026-11-22T05:00:00Z'); // the fixture's session s1
    sr = xenSrUuid('s1', t);
    vdi = xenVdiUuid('s1', t, 'disk0');
  });

  afterEach(async () => {
    await stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists one SR per session and one raw VDI per disk; the VDI reads as the disk', async () => {
    await start();
    const root = (await c.mount('/')).fh!;
    expect(names(await c.readdirplus(root))).toEqual(expect.arrayContaining(['xen', 'sessions', 'backups']));
    const xen = await c.lookupPath(root, '/xen');
    expect(names(await c.readdirplus(xen))).toEqual([sr]);
    const m3 = await c.mount(`/xen/${sr}`); // what NFSSR mounts: serverpath/SR-UUID
    expect(m3.status).toBe(0);
    expect(names(await c.readdirplus(m3.fh!))).toEqual([`${vdi}.raw`]);
    const f = await c.lookupPath(m3.fh!, `${vdi}.raw`);
    expect((await c.getattr(f)).resok!.objAttributes.size).toBe(BigInt(SESSION_DISK_BYTES));
    const r = await c.read(f, 4096, 65536);
    expect(Buffer.from(r.resok!.data).equals(srv.diskContent.subarray(4096, 4096 + 65536))).toBe(true);
  });

  it("the storage manager's attach: a test file created and removed, LINK refused with NOTSUPP, sm-hardlink.conf kept", async () => {
    await start();
    const srFh = (await c.mount(`/xen/${sr}`)).fh!;
    const test = '0b5c7e0e-6f7d-4c53-9a38-1e2f4d5a6b7c';
    // _check_writable: open(test, 'ab') then unlink
    expect((await c.create(srFh, test, 1)).status).toBe(0);
    expect((await c.remove(srFh, test)).status).toBe(0);
    // _check_hardlinks: create, os.link(test, test.new) -> NOTSUPP, unlink both
    const made = await c.create(srFh, test, 1);
    expect(made.status).toBe(0);
    const fileFh = Buffer.from(made.resok!.obj.handle!.data);
    const link = await c.nfs<m.Nfsv3LinkResponse>(15, new m.Nfsv3LinkRequest(c.fh(fileFh), new st.Nfsv3DirOpArgs(c.fh(srFh), `${test}.new`)));
    expect(link.status).toBe(Nfs3Stat.NOTSUPP);
    expect((await c.remove(srFh, `${test}.new`)).status).toBe(Nfs3Stat.NOENT);
    expect((await c.remove(srFh, test)).status).toBe(0);
    const conf = await c.create(srFh, 'sm-hardlink.conf', 0);
    const confFh = Buffer.from(conf.resok!.obj.handle!.data);
    expect((await c.write(confFh, 0, Buffer.from('0'), 2)).status).toBe(0);
    expect(fs.readFileSync(path.join(dir, 's1/xen/sm-hardlink.conf'), 'utf8')).toBe('0');
    expect(names(await c.readdirplus(srFh)).sort()).toEqual([`${vdi}.raw`, 'sm-hardlink.conf'].sort());
    // The VDI belongs to the session: it cannot be removed or replaced.
    expect((await c.remove(srFh, `${vdi}.raw`)).status).toBe(Nfs3Stat.ACCES);
    expect((await c.rename(srFh, 'sm-hardlink.conf', srFh, `${vdi}.raw`)).status).toBe(Nfs3Stat.ACCES);
    // The VMware folder of the same session holds its own files, not the SR's.
    expect(fs.existsSync(path.join(dir, 's1/nfs/sm-hardlink.conf'))).toBe(false);
  });

  it('a write through the VDI lands on the session disk (the VMware flat file shows it)', async () => {
    await start();
    const root = (await c.mount('/')).fh!;
    const f = await c.lookupPath(root, `/xen/${sr}/${vdi}.raw`);
    const data = Buffer.alloc(8192, 0xa7);
    const w = await c.write(f, 1024 * 1024, data, 2);
    expect(w.status).toBe(0);
    const flat = await c.lookupPath(root, '/sessions/s1/disk0-flat.vmdk');
    expect(Buffer.from((await c.read(flat, 1024 * 1024, 8192)).resok!.data).equals(data)).toBe(true);
  });

  it('vhd: the same SR after a restart, the VDI as <uuid>.vhd = disk + footer; the footer can be rewritten only unchanged', async () => {
    await start('raw');
    await stop();
    await start('vhd');
    const srFh = (await c.mount(`/xen/${sr}`)).fh!;
    expect(names(await c.readdirplus(srFh))).toEqual([`${vdi}.vhd`]);
    const f = await c.lookupPath(srFh, `${vdi}.vhd`);
    const size = SESSION_DISK_BYTES + 512;
    expect((await c.getattr(f)).resok!.objAttributes.size).toBe(BigInt(size));
    const tail = await c.read(f, SESSION_DISK_BYTES - 100, 1000); // across the disk's end
    const bytes = Buffer.from(tail.resok!.data);
    expect(bytes.length).toBe(612);
    expect(tail.resok!.eof).toBe(true);
    expect(bytes.subarray(0, 100).equals(srv.diskContent.subarray(SESSION_DISK_BYTES - 100))).toBe(true);
    const footer = vhdFooter(SESSION_DISK_BYTES, vdi, new Date('2026-11-22T05:00:00Z'));
    expect(bytes.subarray(100).equals(footer)).toBe(true);
    // Rewriting the last sector of data and the footer unchanged (as a tool that writes the whole file would).
    const same = Buffer.concat([Buffer.alloc(100, 0x3c), footer]);
    expect((await c.write(f, SESSION_DISK_BYTES - 100, same, 2)).status).toBe(0);
    expect((await c.read(f, SESSION_DISK_BYTES - 100, 100)).resok!.data).toEqual(new Uint8Array(100).fill(0x3c));
    const changed = Buffer.from(footer);
    changed[48] ^= 1; // another current size
    expect((await c.write(f, SESSION_DISK_BYTES, changed, 2)).status).toBe(Nfs3Stat.ACCES);
    expect((await c.write(f, size - 1, Buffer.alloc(2), 2)).status).toBe(Nfs3Stat.FBIG);
  });

  it('off: no /xen folder', async () => {
    await start('off');
    const root = (await c.mount('/')).fh!;
    expect(names(await c.readdirplus(root))).not.toContain('xen');
    expect((await c.lookup(root, 'xen')).status).toBe(Nfs3Stat.NOENT);
  });

  it('a session published on NBD only has no SR; a discarded session takes its SR away', async () => {
    await start();
    const t = new Date('2026-11-22T06:00:00Z');
    fs.mkdirSync(path.join(dir, 's2'));
    srv.catalog.addSession({ name: 's2', vm: 'vm2', pointId: 'p', createdAt: t, filesDir: path.join(dir, 's2') }, { disk0: new MemoryDevice(1024 * 1024) }, { publish: ['nbd'] });
    const root = (await c.mount('/')).fh!;
    const xen = await c.lookupPath(root, '/xen');
    expect(names(await c.readdirplus(xen))).toEqual([sr]);
    expect((await c.lookup(xen, xenSrUuid('s2', t))).status).toBe(Nfs3Stat.NOENT);
    const srFh = await c.lookupPath(xen, sr);
    await srv.catalog.removeSession('s1');
    expect(names(await c.readdirplus(xen))).toEqual([]);
    expect((await c.getattr(srFh)).status).toBe(Nfs3Stat.STALE);
  });
});
