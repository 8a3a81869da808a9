/**
 * The datastore through NFS v3 calls on a real socket: the tree, READ at and past the end of a
 * file, the write path on the flat disk (UNSTABLE + COMMIT, FILE_SYNC) and on hypervisor files
 * (CREATE modes, REMOVE, RENAME), STALE handles, read-only and client-address export options, and
 * handles and file ids that survive a restart of the server.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/images.js';
import { memoryPoint, SESSION_DISK_BYTES, startInProcess, type InProcess } from '../helpers/nfs-fixture.js';
import { emptySattr, entryNames, m, RpcTestClient, st } from '../helpers/nfs-rpc.js';

const POINT = '20261122T034000Z';
let dir: string;
let srv: InProcess;
let c: RpcTestClient;
let root: Buffer;

async function start(opts: Parameters<typeof startInProcess>[2] = {}): Promise<void> {
  srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'), {
    points: [memoryPoint('vm1', POINT, Buffer.alloc(10000, 7), { 'vm1.vmx': 'displayName = "vm1"\n' })],
    ...opts,
  });
  c = await RpcTestClient.connect(srv.port);
  const mnt = await c.mount('/');
  expect(mnt.status).toBe(0);
  root = mnt.fh!;
}

beforeEach(async () => {
  dir = tempDir('rebound-nfs-ds-');
});

afterEach(async () => {
  c?.close();
  await srv?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const fileid = (r: m.Nfsv3GetattrResponse): bigint => r.resok!.objAttributes.fileid;

describe('NFS datastore', () => {
  it('publishes sessions and restore points; MNT accepts sub-folders and refuses files and unknown paths', async () => {
    await start();
    expect(entryNames(await c.readdirplus(root))).toEqual(['.', '..', 'backups', 'sessions', 'xen']);
    const s1 = await c.lookupPath(root, 'sessions/s1');
    expect(entryNames(await c.readdirplus(s1))).toEqual(['.', '..', 'disk0-flat.vmdk', 'disk0.vmdk', 'vm1.vmx']);
    const point = await c.lookupPath(root, `backups/vm1/${POINT}`);
    expect(entryNames(await c.readdirplus(point))).toEqual(['.', '..', 'disk0-flat.vmdk', 'disk0.vmdk', 'vm1.vmx']);
    const sub = await c.mount('/sessions/s1');
    expect(sub.status).toBe(0);
    expect(sub.fh!.equals(s1)).toBe(true);
    expect((await c.mount('/sessions/s1/disk0-flat.vmdk')).status).toBe(20); // MNT3ERR_NOTDIR
    expect((await c.mount('/nope')).status).toBe(2); // MNT3ERR_NOENT
    // READDIRPLUS in small pieces: cookies continue where the last reply stopped.
    const names: string[] = [];
    let cookie = 0n;
    for (let i = 0; i < 10; i++) {
      const r = await c.readdirplus(s1, cookie, 400);
      expect(r.status).toBe(0);
      for (let e = r.resok!.reply.entries; e; e = e.nextentry) {
        names.push(e.name);
        cookie = e.cookie;
      }
      if (r.resok!.reply.eof) break;
    }
    expect(names).toEqual(['.', '..', 'disk0-flat.vmdk', 'disk0.vmdk', 'vm1.vmx']);
  });

  it('READ returns the full count except at the end of the file, where it is short with eof', async () => {
    await start();
    const flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
    const full = await c.read(flat, 1000, 131072);
    expect(full.resok!.count).toBe(131072);
    expect(full.resok!.eof).toBe(false);
    expect(Buffer.from(full.resok!.data).equals(srv.diskContent.subarray(1000, 1000 + 131072))).toBe(true);
    const tail = await c.read(flat, SESSION_DISK_BYTES - 100, 4096);
    expect(tail.resok!.count).toBe(100);
    expect(tail.resok!.eof).toBe(true);
    expect(Buffer.from(tail.resok!.data).equals(srv.diskContent.subarray(SESSION_DISK_BYTES - 100))).toBe(true);
    const past = await c.read(flat, SESSION_DISK_BYTES + 5, 4096);
    expect(past.resok).toMatchObject({ count: 0, eof: true });
    const exact = await c.read(flat, SESSION_DISK_BYTES - 4096, 4096);
    expect(exact.resok).toMatchObject({ count: 4096, eof: true });
    const pointDisk = await c.lookupPath(root, `backups/vm1/${POINT}/disk0-flat.vmdk`);
    const p = await c.read(pointDisk, 0, 1 << 20);
    expect(p.resok).toMatchObject({ count: 10000, eof: true });
    expect(Buffer.from(p.resok!.data).equals(Buffer.alloc(10000, 7))).toBe(true);
    expect((await c.read(root, 0, 10)).status).toBe(21); // NFS3ERR_ISDIR
  });

  it('WRITE UNSTABLE + COMMIT and FILE_SYNC reach the session disk; writes past the end fail with FBIG', async () => {
    await start();
    const flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
    const data = Buffer.alloc(70000, 0x5a);
    const w = await c.write(flat, 12345, data, 0);
    expect(w.status).toBe(0);
    expect(w.resok).toMatchObject({ count: 70000, committed: 0 });
    const commit = await c.commit(flat);
    expect(Buffer.from(commit.resok!.verf).equals(Buffer.from(w.resok!.verf))).toBe(true);
    const sync = await c.write(flat, 0, Buffer.from('hello'), 2);
    expect(sync.resok!.committed).toBe(2);
    const back = Buffer.alloc(70000);
    await srv.disk.read(back, 12345);
    expect(back.equals(data)).toBe(true);
    expect((await c.write(flat, SESSION_DISK_BYTES - 2, Buffer.alloc(4), 0)).status).toBe(27); // NFS3ERR_FBIG
    const pointDisk = await c.lookupPath(root, `backups/vm1/${POINT}/disk0-flat.vmdk`);
    expect((await c.write(pointDisk, 0, Buffer.alloc(4), 0)).status).toBe(30); // NFS3ERR_ROFS
  });

  it('hypervisor files: CREATE modes, WRITE/READ, RENAME keeps the handle, REMOVE makes it STALE; the disk cannot be removed', async () => {
    await start();
    const s1 = await c.lookupPath(root, 'sessions/s1');
    const created = await c.create(s1, '.lck-0000000000000001', 1);
    expect(created.status).toBe(0);
    const fh = Buffer.from(created.resok!.obj.handle!.data);
    expect((await c.create(s1, '.lck-0000000000000001', 1)).status).toBe(17); // GUARDED: EXIST
    expect((await c.create(s1, '.lck-0000000000000001', 0)).status).toBe(0); // UNCHECKED: fine
    expect((await c.create(s1, 'disk0-flat.vmdk', 1)).status).toBe(17);
    const verf = Buffer.from('ABCDEFGH');
    const ex1 = await c.create(s1, 'vm1.nvram', 2, verf);
    const ex2 = await c.create(s1, 'vm1.nvram', 2, verf); // a retransmission: same file
    expect(ex1.status).toBe(0);
    expect(ex2.status).toBe(0);
    expect(Buffer.from(ex2.resok!.obj.handle!.data).equals(Buffer.from(ex1.resok!.obj.handle!.data))).toBe(true);
    expect((await c.create(s1, 'vm1.nvram', 2, Buffer.from('other!!!'))).status).toBe(17);

    expect((await c.write(fh, 0, Buffer.from('esxi-host-1\n'), 2)).status).toBe(0);
    expect(fs.readFileSync(path.join(dir, 's1/nfs/.lck-0000000000000001'), 'utf8')).toBe('esxi-host-1\n');
    const before = await c.getattr(fh);
    expect((await c.rename(s1, '.lck-0000000000000001', s1, 'renamed.lck')).status).toBe(0);
    const after = await c.getattr(fh);
    expect(after.status).toBe(0);
    expect(fileid(after)).toBe(fileid(before));
    expect(Buffer.from((await c.read(fh, 0, 100)).resok!.data).toString()).toBe('esxi-host-1\n');

    expect((await c.remove(s1, 'renamed.lck')).status).toBe(0);
    expect((await c.getattr(fh)).status).toBe(70); // NFS3ERR_STALE
    expect((await c.remove(s1, 'disk0-flat.vmdk')).status).toBe(13); // NFS3ERR_ACCES
    expect((await c.remove(s1, 'nothing')).status).toBe(2);
    expect((await c.rename(s1, 'disk0-flat.vmdk', s1, 'x.vmdk')).status).toBe(13);

    const mk = await c.nfs<m.Nfsv3MkdirResponse>(9, new m.Nfsv3MkdirRequest(new st.Nfsv3DirOpArgs(c.fh(s1), 'snap'), emptySattr()));
    expect(mk.status).toBe(0);
    const snapDir = Buffer.from(mk.resok!.obj.handle!.data);
    expect((await c.create(snapDir, 'vm1-000001.vmdk', 1)).status).toBe(0);
    const rmdir = await c.nfs<m.Nfsv3RmdirResponse>(13, new m.Nfsv3RmdirRequest(new st.Nfsv3DirOpArgs(c.fh(s1), 'snap')));
    expect(rmdir.status).toBe(66); // NOTEMPTY
    const sym = await c.nfs<m.Nfsv3SymlinkResponse>(10, new m.Nfsv3SymlinkRequest(new st.Nfsv3DirOpArgs(c.fh(s1), 'l'), emptySattr(), 'x'));
    expect(sym.status).toBe(10004); // NOTSUPP
    // SETATTR(size) of a hypervisor file truncates it; the flat disk's size is fixed.
    const vswp = Buffer.from((await c.create(s1, 'vm1.vswp', 1)).resok!.obj.handle!.data);
    const grow = await c.nfs<m.Nfsv3SetattrResponse>(2, new m.Nfsv3SetattrRequest(c.fh(vswp), emptySattr(1n << 30n), new st.Nfsv3SattrGuard(false)));
    expect(grow.status).toBe(0);
    expect(fs.statSync(path.join(dir, 's1/nfs/vm1.vswp')).size).toBe(1 << 30);
    const flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
    const resize = await c.nfs<m.Nfsv3SetattrResponse>(2, new m.Nfsv3SetattrRequest(c.fh(flat), emptySattr(5n), new st.Nfsv3SattrGuard(false)));
    expect(resize.status).toBe(22);
  });

  it('symlinks put into a session folder by hand are not published', async () => {
    await start();
    const s1 = await c.lookupPath(root, 'sessions/s1');
    await c.readdirplus(s1); // prepares the folder
    fs.symlinkSync('/etc/passwd', path.join(dir, 's1/nfs/passwd'));
    expect(entryNames(await c.readdirplus(s1))).not.toContain('passwd');
    expect((await c.lookup(s1, 'passwd')).status).toBe(2);
  });

  it('handles of a removed session answer STALE', async () => {
    await start();
    const flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
    expect((await c.getattr(flat)).status).toBe(0);
    await srv.catalog.removeSession('s1');
    expect((await c.getattr(flat)).status).toBe(70);
    expect(entryNames(await c.readdirplus(await c.lookupPath(root, 'sessions')))).toEqual(['.', '..']);
  });

  it('handles and file ids survive a restart; the write verifier changes', async () => {
    await start({ startedAt: new Date(1_000_000) });
    const s1 = await c.lookupPath(root, 'sessions/s1');
    const flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
    const pointDisk = await c.lookupPath(root, `backups/vm1/${POINT}/disk0-flat.vmdk`);
    const lck = Buffer.from((await c.create(s1, 'vm1.vmx.lck', 1)).resok!.obj.handle!.data);
    const ids = await Promise.all([root, s1, flat, pointDisk, lck].map(async (h) => fileid(await c.getattr(h))));
    const verf1 = Buffer.from((await c.write(flat, 0, Buffer.from('x'), 0)).resok!.verf);
    c.close();
    const disk = srv.disk;
    const content = srv.diskContent;
    await srv.close();

    await start({ startedAt: new Date(2_000_000), disk, diskContent: content });
    const again = await Promise.all([root, s1, flat, pointDisk, lck].map((h) => c.getattr(h)));
    again.forEach((r) => expect(r.status).toBe(0));
    expect(again.map(fileid)).toEqual(ids);
    const verf2 = Buffer.from((await c.commit(flat)).resok!.verf);
    expect(verf2.equals(verf1)).toBe(false);
    // A session recreated under the same name is a different session: old handles are STALE.
    c.close();
    await srv.close();
    await start({ createdAt: new Date('2026-12-01T00:00:00Z'), disk, diskContent: content });
    expect((await c.getattr(flat)).status).toBe(70);
  });

  it('export options: read-only refuses changes with ROFS; clients outside the allowed list get ACCES', async () => {
    await start({ readOnly: true });
    const s1 = await c.lookupPath(root, 'sessions/s1');
    expect((await c.create(s1, 'x', 1)).status).toBe(30);
    const flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
    expect((await c.write(flat, 0, Buffer.from('x'), 2)).status).toBe(30);
    const acc = await c.nfs<m.Nfsv3AccessResponse>(4, new m.Nfsv3AccessRequest(c.fh(flat), 0x3f));
    expect(acc.resok!.access).toBe(0x01);
    c.close();
    await srv.close();

    srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'), { allowedClients: ['10.0.0.0/8'] });
    c = await RpcTestClient.connect(srv.port);
    expect((await c.mount('/')).status).toBe(13);
    expect((await c.getattr(root)).status).toBe(13);
  });

  it('a session published on NBD only is not in the datastore', async () => {
    await start({ withSession: false });
    srv.catalog.addSession({ ...srv.session, name: 'nbd-only' }, { disk0: srv.disk }, { publish: ['nbd', 'fuse'] });
    expect(entryNames(await c.readdirplus(await c.lookupPath(root, 'sessions')))).toEqual(['.', '..']);
  });
});
