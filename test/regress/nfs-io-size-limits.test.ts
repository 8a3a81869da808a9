/**
 * Regress (issue 12, limits): NFS READ and WRITE sizes are bounded by nfsMaxIoSize, which FSINFO
 * announces as rtmax/wtmax. A READ asking for more gets at most rtmax bytes (a short read, as
 * knfsd clamps); a WRITE carrying more than wtmax is cut short to wtmax and its reply says so
 * (RFC 1813: "a short write of at most wtmax bytes", knfsd does the same); the RPC record cap
 * follows the setting (wtmax + 64K), so a record much larger than the largest WRITE drops the
 * connection, and other clients go on.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as m from '@jsonjoy.com/json-pack/lib/nfs/v3/messages.js';
import * as st from '@jsonjoy.com/json-pack/lib/nfs/v3/structs.js';
import { MAX_IO } from '../../src/nfs/nfs3/context.js';
import { recordLimit } from '../../src/nfs/rpc/constants.js';
import { tempDir } from '../helpers/images.js';
import { startInProcess, type InProcess } from '../helpers/nfs-fixture.js';
import { NFS, RpcTestClient } from '../helpers/nfs-rpc.js';

const KiB = 1024;
let dir: string | undefined;
let srv: InProcess | undefined;
const clients: RpcTestClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await srv?.close();
  srv = undefined;
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function start(maxIoSize?: number): Promise<{ c: RpcTestClient; root: Buffer; flat: Buffer }> {
  dir = tempDir('rebound-nfs-io-');
  srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'), maxIoSize === undefined ? {} : { maxIoSize });
  const c = await RpcTestClient.connect(srv.port);
  clients.push(c);
  const root = (await c.mount('/')).fh!;
  const flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
  return { c, root, flat };
}

describe('regress: NFS READ/WRITE sizes', () => {
  it('FSINFO announces the default 1 MiB as rtmax/wtmax', async () => {
    const { c, root } = await start();
    const info = await c.nfs<m.Nfsv3FsinfoResponse>(19, new m.Nfsv3FsinfoRequest(new st.Nfsv3Fh(root)));
    expect(info.status).toBe(0);
    expect(info.resok).toMatchObject({ rtmax: MAX_IO, rtpref: MAX_IO, wtmax: MAX_IO, wtpref: MAX_IO });
  });

  it('with nfsMaxIoSize 64K: FSINFO says so, a larger READ is answered short, a larger WRITE is cut short', async () => {
    const max = 64 * KiB;
    const { c, root, flat } = await start(max);
    const info = await c.nfs<m.Nfsv3FsinfoResponse>(19, new m.Nfsv3FsinfoRequest(new st.Nfsv3Fh(root)));
    expect(info.resok).toMatchObject({ rtmax: max, wtmax: max });

    const r = await c.read(flat, 4096, 1024 * KiB);
    expect(r.status).toBe(0);
    expect(r.resok!.count).toBe(max);
    expect(r.resok!.eof).toBe(false);
    expect(Buffer.from(r.resok!.data).equals(srv!.diskContent.subarray(4096, 4096 + max))).toBe(true);

    const data = Buffer.alloc(max + 8 * KiB, 0xa5);
    const w = await c.write(flat, 0, data, 2);
    expect(w.status).toBe(0);
    expect(w.resok!.count).toBe(max);
    const back = await c.read(flat, 0, max + 8 * KiB);
    expect(back.resok!.count).toBe(max); // clamped again
    expect(Buffer.from(back.resok!.data).equals(data.subarray(0, max))).toBe(true);
    const after = await c.read(flat, max, 8 * KiB);
    expect(Buffer.from(after.resok!.data).equals(srv!.diskContent.subarray(max, max + 8 * KiB))).toBe(true);
  });

  it('drops a connection sending a record over wtmax + 64K; other clients are answered', async () => {
    const max = 64 * KiB;
    const { c } = await start(max);
    expect(recordLimit(max)).toBe(max + 64 * KiB);
    const sock = net.connect({ port: srv!.port, host: '127.0.0.1' });
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.on('error', () => undefined);
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    // One complete record of 192 KiB (a WRITE-sized call far over the cap).
    const big = Buffer.alloc(4 + 192 * KiB, 0);
    big.writeUInt32BE((0x80000000 | (192 * KiB)) >>> 0, 0);
    sock.write(big);
    await closed;
    expect(sock.destroyed).toBe(true);
    expect(await c.call(NFS, 3, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
  });

  it('refuses an nfsMaxIoSize that is not a multiple of 4K from 4K to 16M', async () => {
    dir = tempDir('rebound-nfs-io-');
    for (const bad of [1000, 4097, 32 * 1024 * 1024]) {
      await expect(startInProcess(path.join(dir, 'state'), path.join(dir, 's1'), { maxIoSize: bad })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    }
  });
});
