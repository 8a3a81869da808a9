/**
 * The RPC layer through a real socket: record marking (fragments, records split byte by byte),
 * many calls in flight with replies by XID out of order (a slow READ does not hold up GETATTR or
 * NULL), RPC-level errors (PROG_UNAVAIL, PROG_MISMATCH, AUTH_ERROR, GARBAGE_ARGS) that leave the
 * connection usable, an oversized record that drops it, and the portmapper.
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/images.js';
import { startInProcess, type InProcess } from '../helpers/nfs-fixture.js';
import { encodeCall, m, mm, MOUNT, NFS, PORTMAP, record, RpcTestClient } from '../helpers/nfs-rpc.js';

let dir: string;
let srv: InProcess;
let root: Buffer;
let flat: Buffer;

beforeAll(async () => {
  dir = tempDir('rebound-nfs-rpc-');
  srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'));
  const c = await RpcTestClient.connect(srv.port);
  root = (await c.mount('/')).fh!;
  flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
  c.close();
});

afterAll(async () => {
  await srv?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('ONC RPC over TCP', () => {
  it('answers GETATTR and NULL while a slow READ on the same connection is pending (replies by XID, out of order)', async () => {
    const c = await RpcTestClient.connect(srv.port);
    srv.disk.rules = { delayMs: (op) => (op === 'read' ? 400 : 0) };
    try {
      const t0 = Date.now();
      const read = c.read(flat, 0, 65536);
      const getattr = c.getattr(root);
      const nul = c.call(NFS, 3, 0);
      const ga = await getattr;
      const gaMs = Date.now() - t0;
      await nul;
      const r = await read;
      expect(ga.status).toBe(0);
      expect(gaMs).toBeLessThan(300);
      expect(r.status).toBe(0);
      expect(Buffer.from(r.resok!.data).equals(srv.diskContent.subarray(0, 65536))).toBe(true);
      expect(c.order.indexOf(c.order[c.order.length - 1]!)).toBe(2); // the READ reply came last
    } finally {
      srv.disk.rules = {};
      c.close();
    }
  });

  it('keeps 64 READs in flight on one connection and answers each with its own data', async () => {
    const c = await RpcTestClient.connect(srv.port);
    srv.disk.rules = { delayMs: (_op, offset) => (offset / 4096) % 7 };
    try {
      const results = await Promise.all(Array.from({ length: 64 }, (_, i) => c.read(flat, i * 4096 + 17, 4096)));
      results.forEach((r, i) => expect(Buffer.from(r.resok!.data).equals(srv.diskContent.subarray(i * 4096 + 17, i * 4096 + 17 + 4096))).toBe(true));
      expect(c.order).not.toEqual([...c.order].sort((a, b) => a - b)); // some came back out of order
    } finally {
      srv.disk.rules = {};
      c.close();
    }
  });

  it('decodes multi-fragment records and records that arrive one byte at a time', async () => {
    const c = await RpcTestClient.connect(srv.port);
    const frag = await c.call(NFS, 3, 0, Buffer.alloc(0), { fragment: 7 });
    expect(frag).toMatchObject({ kind: 'accepted', stat: 0 });
    const xid = c.nextXid();
    const bytes = record(encodeCall(xid, NFS, 3, 0, Buffer.alloc(0)));
    const reply = c.reply(xid);
    for (const b of bytes) {
      c.socket.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    expect(await reply).toMatchObject({ kind: 'accepted', stat: 0 });
    c.close();
  });

  it('answers RPC-level errors and keeps the connection', async () => {
    const c = await RpcTestClient.connect(srv.port);
    expect(await c.call(100099, 1, 0)).toMatchObject({ kind: 'accepted', stat: 1 }); // PROG_UNAVAIL
    expect(await c.call(NFS, 4, 0)).toMatchObject({ kind: 'accepted', stat: 2 }); // PROG_MISMATCH
    expect(await c.call(NFS, 3, 99)).toMatchObject({ kind: 'accepted', stat: 3 }); // PROC_UNAVAIL
    expect(await c.call(NFS, 3, 1, Buffer.alloc(0), { cred: { flavor: 0, body: Buffer.alloc(0) } })).toMatchObject({ kind: 'denied', rejectStat: 1, authStat: 5 });
    expect(await c.call(NFS, 3, 1, Buffer.from([0, 0]))).toMatchObject({ kind: 'accepted', stat: 4 }); // GARBAGE_ARGS
    expect(await c.call(MOUNT, 3, 1, Buffer.from([0, 0, 0, 9]))).toMatchObject({ kind: 'accepted', stat: 4 });
    const bad = await c.nfs<m.Nfsv3GetattrResponse>(1, new m.Nfsv3GetattrRequest(c.fh(Buffer.from('not a handle'))));
    expect(bad.status).toBe(10001); // NFS3ERR_BADHANDLE
    expect((await c.getattr(root)).status).toBe(0);
    expect(c.closed).toBe(false);
    c.close();
  });

  it('drops a connection that announces a record over the limit', async () => {
    const c = await RpcTestClient.connect(srv.port);
    const mark = Buffer.alloc(4);
    mark.writeUInt32BE((0x80000000 | (64 * 1024 * 1024)) >>> 0);
    c.socket.write(mark);
    for (let i = 0; i < 5; i++) c.socket.write(Buffer.alloc(1024 * 1024));
    for (let i = 0; i < 100 && !c.closed; i++) await new Promise((r) => setTimeout(r, 20));
    expect(c.closed).toBe(true);
    const d = await RpcTestClient.connect(srv.port); // the server carries on
    expect(await d.call(NFS, 3, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
    d.close();
  });

  it('MOUNT v3: EXPORT lists "/", DUMP lists mounts until UMNT/UMNTALL', async () => {
    const c = await RpcTestClient.connect(srv.port);
    const exp = (await c.mountCall(5)) as mm.MountExportResponse;
    expect(exp.exports).toMatchObject({ dir: '/', next: undefined });
    expect((await c.mount('/sessions/s1')).status).toBe(0);
    const dump = (await c.mountCall(2)) as mm.MountDumpResponse;
    const list: string[] = [];
    for (let b = dump.mountlist; b; b = b.next) list.push(`${b.hostname}:${b.directory}`);
    expect(list).toContain('127.0.0.1:/sessions/s1');
    await c.mountCall(3, new mm.MountUmntRequest('/sessions/s1'));
    const after = (await c.mountCall(2)) as mm.MountDumpResponse;
    let left = 0;
    for (let b = after.mountlist; b; b = b.next) if (b.directory === '/sessions/s1') left++;
    expect(left).toBe(0);
    await c.mountCall(4);
    expect(((await c.mountCall(2)) as mm.MountDumpResponse).mountlist).toBeUndefined();
    expect(await c.call(MOUNT, 3, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
    c.close();
  });

  it('the portmapper answers GETPORT for MOUNT v3 and NFS v3 over TCP, 0 for others, and DUMP', async () => {
    const pm = await srv.server.listenPortmap('127.0.0.1', 0);
    const c = await RpcTestClient.connect(pm.port);
    const getport = async (prog: number, vers: number, prot = 6): Promise<number> => {
      const args = Buffer.alloc(16);
      [prog, vers, prot, 0].forEach((v, i) => args.writeUInt32BE(v, i * 4));
      const r = await c.call(PORTMAP, 2, 3, args);
      if (r.kind !== 'accepted') throw new Error('denied');
      return r.body.readUInt32BE(0);
    };
    expect(await c.call(PORTMAP, 2, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
    expect(await getport(NFS, 3)).toBe(srv.port);
    expect(await getport(MOUNT, 3)).toBe(srv.port);
    expect(await getport(NFS, 3, 17)).toBe(0); // no UDP
    expect(await getport(NFS, 4)).toBe(0);
    const dump = await c.call(PORTMAP, 2, 4);
    if (dump.kind !== 'accepted') throw new Error('denied');
    const entries: number[][] = [];
    for (let x = 0; dump.body.readUInt32BE(x) === 1; x += 20) entries.push([1, 2, 3, 4].map((i) => dump.body.readUInt32BE(x + 4 * i)));
    expect(entries).toEqual([
      ...[4, 3, 2].flatMap((v) => [[PORTMAP, v, 6, pm.port], [PORTMAP, v, 17, pm.port]]),
      [MOUNT, 3, 6, srv.port],
      [NFS, 3, 6, srv.port],
    ]);
    // rpcbind v3/v4 (rpcinfo -s, mount.nfs): GETADDR gives a universal address, DUMP the table with netids.
    expect(await c.call(PORTMAP, 3, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
    expect(await c.call(PORTMAP, 5, 0)).toMatchObject({ kind: 'accepted', stat: 2 }); // PROG_MISMATCH
    const str = (t: string): Buffer => {
      const b = Buffer.alloc(4 + Math.ceil(t.length / 4) * 4);
      b.writeUInt32BE(t.length, 0);
      b.write(t, 4);
      return b;
    };
    const rpcb = (prog: number, vers: number, netid: string): Buffer => {
      const head = Buffer.alloc(8);
      head.writeUInt32BE(prog, 0);
      head.writeUInt32BE(vers, 4);
      return Buffer.concat([head, str(netid), str(''), str('')]);
    };
    const readStr = (b: Buffer, x: number): [string, number] => {
      const n = b.readUInt32BE(x);
      return [b.toString('utf8', x + 4, x + 4 + n), x + 4 + Math.ceil(n / 4) * 4];
    };
    for (const [vers, proc] of [[3, 3], [4, 9]] as const) {
      const r = await c.call(PORTMAP, vers, proc, rpcb(NFS, 3, 'tcp'));
      if (r.kind !== 'accepted') throw new Error('denied');
      expect(readStr(r.body, 0)[0]).toBe(`127.0.0.1.${srv.port >> 8}.${srv.port & 0xff}`);
    }
    const none = await c.call(PORTMAP, 4, 9, rpcb(NFS, 4, 'tcp'));
    if (none.kind !== 'accepted') throw new Error('denied');
    expect(readStr(none.body, 0)[0]).toBe(''); // GETVERSADDR: no NFS v4
    expect(await c.call(PORTMAP, 3, 3, Buffer.from([0, 1, 0]))).toMatchObject({ kind: 'accepted', stat: 4 }); // GARBAGE_ARGS
    const huge = Buffer.alloc(12);
    huge.writeUInt32BE(0xfffffff0, 8); // a netid "longer" than the record
    expect(await c.call(PORTMAP, 3, 3, huge)).toMatchObject({ kind: 'accepted', stat: 4 });
    const d3 = await c.call(PORTMAP, 3, 4);
    if (d3.kind !== 'accepted') throw new Error('denied');
    const rows: string[] = [];
    for (let x = 0; d3.body.readUInt32BE(x) === 1; ) {
      const prog = d3.body.readUInt32BE(x + 4);
      const vers = d3.body.readUInt32BE(x + 8);
      let netid: string, addr: string, owner: string;
      [netid, x] = readStr(d3.body, x + 12);
      [addr, x] = readStr(d3.body, x);
      [owner, x] = readStr(d3.body, x);
      rows.push(`${prog} ${vers} ${netid} ${addr} ${owner}`);
    }
    expect(rows).toContain(`${NFS} 3 tcp 127.0.0.1.${srv.port >> 8}.${srv.port & 0xff} superuser`);
    expect(rows).toContain(`${PORTMAP} 4 udp 127.0.0.1.${pm.port >> 8}.${pm.port & 0xff} superuser`);
    c.close();

    // The same over UDP (one call per datagram, no record mark).
    const udp = dgram.createSocket('udp4');
    const args = Buffer.alloc(16);
    [NFS, 3, 6, 0].forEach((v, i) => args.writeUInt32BE(v, i * 4));
    const reply = new Promise<Buffer>((resolve) => udp.once('message', resolve));
    udp.send(encodeCall(77, PORTMAP, 2, 3, args), pm.port, '127.0.0.1');
    const r = await reply;
    udp.close();
    expect([r.readUInt32BE(0), r.readUInt32BE(4), r.readUInt32BE(8), r.readUInt32BE(20), r.readUInt32BE(24)]).toEqual([77, 1, 0, 0, srv.port]);
  });
});
