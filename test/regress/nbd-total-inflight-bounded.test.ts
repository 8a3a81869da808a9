/**
 * Regress (issue 12, limits): the per-connection budget alone let many connections together hold
 * connections x (64 MiB running + 32 MiB unsent): 12 connections of unread reads held 2 GB. Now
 * the payload bytes of every connection come from one daemon-wide budget (maxInflightBytesTotal,
 * shared with NFS), first come first served, and a connection whose request waits for it reads
 * nothing more. A client that leaves gives back what it held and its waiting request leaves the
 * queue, so the others go on. The budget is shared with the NFS server's READs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { NbdClient } from '../../src/nbd/client.js';
import { Cmd } from '../../src/nbd/protocol.js';
import { NbdServer } from '../../src/nbd/server.js';
import { ByteBudget } from '../../src/util/byte-budget.js';
import { tempDir } from '../helpers/images.js';
import { GatedDisk, startNbd } from '../helpers/nbd-fixture.js';
import { startInProcess } from '../helpers/nfs-fixture.js';
import { RpcTestClient } from '../helpers/nfs-rpc.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';

const MiB = 1024 * 1024;
const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms));
let cleanup: Array<() => Promise<void> | void> = [];
const gates: Array<() => void> = [];
/** Registers the disk's gate to be opened after the test, so nothing stays blocked in a read. */
const gated = (d: GatedDisk): GatedDisk => (gates.push(() => d.open()), d);
afterEach(async () => {
  for (const open of gates.splice(0)) open(); // nothing stays blocked in a device read
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});


/** Waits until `f()` stops changing (bounded by count). */
async function settled(f: () => number): Promise<number> {
  let last = -1;
  for (let i = 0; i < 50 && f() !== last; i++) {
    last = f();
    await tick();
  }
  return f();
}

async function start(budget: ByteBudget, disk: MemoryDevice): Promise<{ server: NbdServer; sock: string }> {
  const fx = await startNbd([{ name: 'd', device: disk }], { budget });
  cleanup.push(() => fx.close());
  return { server: fx.server, sock: fx.socket };
}

async function deafClient(sock: string, reads: number, length: number): Promise<RawNbdClient> {
  const c = await RawNbdClient.connect({ path: sock });
  cleanup.push(() => c.close());
  await c.handshake('d', { structured: false });
  c.socket.pause();
  for (let i = 0; i < reads; i++) c.request(Cmd.READ, { cookie: BigInt(i + 1), offset: (i % 4) * length, length });
  return c;
}

describe('regress: the daemon-wide in-flight budget', () => {
  it('bounds the bytes of all connections together; a client that leaves gives its share back', async () => {
    const disk = gated(new GatedDisk(64 * MiB));
    const budget = new ByteBudget(48 * MiB);
    const { sock } = await start(budget, disk);
    // 4 connections x 8 READs of 8 MiB: 256 MiB asked for, each connection may hold 64 MiB on its own.
    const deaf = [];
    for (let i = 0; i < 4; i++) deaf.push(await deafClient(sock, 8, 8 * MiB));
    expect(await settled(() => disk.started)).toBe(6); // 48 MiB / 8 MiB
    expect(budget.used).toBe(48 * MiB);
    expect(budget.waiting).toBeGreaterThan(0);

    // Every connection that holds something leaves: their bytes come back, and the waiting
    // requests of those that left are gone from the queue.
    for (const c of deaf) c.close();
    disk.open();
    expect(await settled(() => budget.used)).toBe(0);
    expect(budget.waiting).toBe(0);

    // A well-behaved client is served afterwards.
    const good = await NbdClient.connect(`nbd+unix:///d?socket=${sock}`);
    cleanup.push(() => good.close());
    const data = Buffer.alloc(1 * MiB, 0x3c);
    await good.write(data, 40 * MiB);
    const back = Buffer.alloc(data.length);
    await good.read(back, 40 * MiB);
    expect(back.equals(data)).toBe(true);
  });

  it('NFS READs wait for the budget NBD holds, and run once it is given back', async () => {
    const disk = gated(new GatedDisk(64 * MiB));
    const budget = new ByteBudget(16 * MiB);
    const { sock } = await start(budget, disk);
    const deaf = await deafClient(sock, 4, 8 * MiB);
    expect(await settled(() => disk.started)).toBe(2);
    expect(budget.used).toBe(16 * MiB);

    const dir = tempDir('rebound-nfs-total-');
    const nfs = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'), { budget });
    cleanup.push(async () => {
      await nfs.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const c = await RpcTestClient.connect(nfs.port);
    cleanup.push(() => c.close());
    const root = (await c.mount('/')).fh!;
    const flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
    let answered = false;
    const read = c.read(flat, 0, 65536).then((r) => ((answered = true), r));
    // The deaf client's third READ waits in the queue, and the NFS READ behind it.
    expect(await settled(() => budget.waiting)).toBe(2);
    expect(answered).toBe(false);

    deaf.close();
    disk.open();
    const r = await read;
    expect(r.status).toBe(0);
    expect(Buffer.from(r.resok!.data).equals(nfs.diskContent.subarray(0, 65536))).toBe(true);
    expect(await settled(() => budget.used)).toBe(0);
  });
});
