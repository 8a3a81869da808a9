/**
 * Regress (issue 12, "memory without bounds"), against the daemon process (`rebound serve`) with
 * its default limits:
 *  - 128 NBD READs of 32 MiB on one connection whose replies are never read (held 4.27 GB);
 *  - 12 connections each sending 4,096 READs of 64 KiB and never reading a reply (held 2 GB);
 *  - an RPC record that never ends: fragments without the last-fragment bit, 2 GiB of them sent
 *    in all (the daemon drops each connection at the record cap, the client reconnects and goes on;
 *    RSS grew ~2 MiB per MiB sent, 4 GB after 2 GiB).
 * Meanwhile a well-behaved real client is served: qemu-io writes and verifies a pattern over NBD;
 * nfs-cat reads a file and an RPC client reads data over NFS. The daemon's RSS (/proc/PID/status:
 * VmRSS now, VmHWM its peak since start) stays under RSS_CAP, well under 1 GiB. The figures are
 * printed. Full sizes by default (the daemon bounds them, so they are cheap); REBOUND_HEAVY is not
 * needed.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Cmd } from '../../src/nbd/protocol.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { nfsUrl } from '../helpers/nfs-fixture.js';
import { RpcTestClient } from '../helpers/nfs-rpc.js';
import { missingPeers } from '../helpers/peers.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';
import { run } from '../helpers/run.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** The cap asserted for the defaults (maxInflightBytesTotal 512M; each scenario holds far less). */
const RSS_CAP = 512 * MiB;

function status(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${key} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}
const mib = (n: number): string => `${(n / MiB).toFixed(0)} MiB`;

const missing = missingPeers('qemu-io', 'nfs-cat');
let data: string | undefined;
let d: DaemonProcess | undefined;
const clients: Array<{ close(): void }> = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await d?.stop('SIGKILL');
  d = undefined;
  if (data) fs.rmSync(data, { recursive: true, force: true });
});

async function startNbdDaemon(): Promise<{ pid: number; port: number; uri: string }> {
  data = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-rss-'));
  d = await startDaemonProcess(['--data', data, '--nbd', '127.0.0.1:0', '--http', 'off', '--export', 'm=memory:64M', '--log-format', 'json']);
  return { pid: d.child.pid!, port: Number(d.nbd.split(':').pop()), uri: `nbd://${d.nbd}/m` };
}

/** qemu-io writes a pattern and reads it back, then reads it again on a new read-only connection. */
async function qemuIoServed(uri: string, pattern: number): Promise<void> {
  const p = `0x${pattern.toString(16)}`;
  const w = await run('qemu-io', ['-f', 'raw', uri, '-c', `write -P ${p} 1M 3M`, '-c', `read -P ${p} 1M 3M`], { timeoutMs: 60_000 });
  expect(w.code, w.stdout + w.stderr).toBe(0);
  expect(w.stdout + w.stderr).not.toMatch(/fail|error/i);
  const r = await run('qemu-io', ['-f', 'raw', '-r', uri, '-c', `read -P ${p} 1M 3M`], { timeoutMs: 60_000 });
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(r.stdout + r.stderr).not.toMatch(/fail|error/i);
}

/** Lets the daemon take what it will from the stalled clients: waits until its RSS stops growing (bounded by count). */
async function settle(pid: number): Promise<void> {
  let last = 0;
  for (let i = 0; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const now = status(pid, 'VmRSS');
    if (i >= 5 && Math.abs(now - last) < 2 * MiB) return;
    last = now;
  }
}

describe.skipIf(missing.length > 0)('regress: the daemon\'s memory under clients that do not read or never finish', () => {
  it('128 unread 32 MiB NBD reads on one connection: RSS stays under the cap, qemu-io is served', async () => {
    const { pid, port, uri } = await startNbdDaemon();
    const idle = status(pid, 'VmRSS');
    const deaf = await RawNbdClient.connect({ port });
    clients.push(deaf);
    await deaf.handshake('m', { structured: false });
    deaf.socket.pause();
    for (let i = 0; i < 128; i++) deaf.request(Cmd.READ, { cookie: BigInt(i + 1), offset: (i % 2) * 32 * MiB, length: 32 * MiB });
    await settle(pid);
    await qemuIoServed(uri, 0x5a);
    const loaded = status(pid, 'VmRSS');
    const peak = status(pid, 'VmHWM');
    expect(deaf.isClosed).toBe(false);
    console.log(`128 x 32 MiB unread NBD reads: daemon RSS idle ${mib(idle)}, loaded ${mib(loaded)}, peak (VmHWM) ${mib(peak)}; cap ${mib(RSS_CAP)}`);
    expect(peak).toBeLessThan(RSS_CAP);
  }, 180_000);

  it('12 connections of 4,096 unread 64 KiB NBD reads each: RSS stays under the cap, qemu-io is served', async () => {
    const { pid, port, uri } = await startNbdDaemon();
    const idle = status(pid, 'VmRSS');
    const deaf: RawNbdClient[] = [];
    for (let c = 0; c < 12; c++) {
      const cl = await RawNbdClient.connect({ port });
      clients.push(cl);
      await cl.handshake('m', { structured: false });
      cl.socket.pause();
      deaf.push(cl);
    }
    for (const cl of deaf) {
      for (let i = 0; i < 4096; i++) cl.request(Cmd.READ, { cookie: BigInt(i + 1), offset: (i % 1024) * 64 * 1024, length: 64 * 1024 });
    }
    await settle(pid);
    await qemuIoServed(uri, 0xa5);
    const loaded = status(pid, 'VmRSS');
    const peak = status(pid, 'VmHWM');
    expect(deaf.filter((c) => c.isClosed)).toHaveLength(0);
    console.log(`12 connections x 4,096 unread 64 KiB NBD reads: daemon RSS idle ${mib(idle)}, loaded ${mib(loaded)}, peak (VmHWM) ${mib(peak)}; cap ${mib(RSS_CAP)}`);
    expect(peak).toBeLessThan(RSS_CAP);
  }, 180_000);

  it('2 GiB of an RPC record that never ends: each connection is dropped at the cap, RSS stays under it, nfs-cat is served', async () => {
    data = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-rss-nfs-'));
    d = await startDaemonProcess(['--data', data, '--nbd', '127.0.0.1:0', '--http', 'off', '--demo', '--nfs', '127.0.0.1:0', '--portmap', 'off', '--log-format', 'json']);
    const pid = d.child.pid!;
    const nfsPort = Number(/NFS: datastore at [^ ]*:(\d+)/.exec(d.stdout())?.[1]);
    const image = fs.readFileSync(path.join(data, 'demo', 'demo-disk.img'));
    const ls = await run('nfs-ls', [nfsUrl('/backups/demo', nfsPort)], { timeoutMs: 30_000 });
    expect(ls.code, ls.stderr).toBe(0);
    const point = /(\d{8}T\d{6}Z)/.exec(ls.stdout)?.[1];
    expect(point).toBeDefined();
    const idle = status(pid, 'VmRSS');

    // The attack: 4 clients at a time, each sending one fragment header of 2^31-1 bytes without
    // the last-fragment bit and then data until the daemon cuts it; until 2 GiB are sent in all.
    const TOTAL = 2 * GiB;
    const chunk = Buffer.alloc(1 * MiB, 0x5a);
    let sent = 0;
    let connections = 0;
    const attacker = async (): Promise<void> => {
      while (sent < TOTAL) {
        connections++;
        const s = net.connect({ port: nfsPort, host: '127.0.0.1' });
        await new Promise<void>((r, j) => s.once('connect', () => r()).once('error', j));
        s.on('error', () => undefined);
        const closed = new Promise<void>((r) => s.once('close', () => r()));
        const mark = Buffer.alloc(4);
        mark.writeUInt32BE(0x7fffffff); // no last-fragment bit
        s.write(mark);
        while (sent < TOTAL && !s.destroyed) {
          const ok = await new Promise<boolean>((r) => s.write(chunk, (err) => r(!err)));
          if (ok) sent += chunk.length;
        }
        s.destroy();
        await closed;
      }
    };
    const attack = Promise.all([attacker(), attacker(), attacker(), attacker()]);
    // The attack is under way (bounded: the attackers stop at TOTAL) before the good client starts.
    while (sent < 64 * MiB) await new Promise((r) => setTimeout(r, 10));

    // The well-behaved clients, during the attack: nfs-cat of the descriptor, and 4 MiB of the flat disk over RPC.
    const cat = await run('nfs-cat', [nfsUrl(`/backups/demo/${point}/disk0.vmdk`, nfsPort)], { timeoutMs: 60_000 });
    expect(cat.code, cat.stderr).toBe(0);
    expect(cat.stdout).toContain(`RW ${image.length / 512} VMFS "disk0-flat.vmdk"`);
    const c = await RpcTestClient.connect(nfsPort);
    clients.push(c);
    const root = (await c.mount('/')).fh!;
    const flat = await c.lookupPath(root, `backups/demo/${point}/disk0-flat.vmdk`);
    for (let off = 0; off < 4 * MiB; off += MiB) {
      const r = await c.read(flat, off, MiB);
      expect(r.status).toBe(0);
      expect(Buffer.from(r.resok!.data).equals(image.subarray(off, off + MiB))).toBe(true);
    }
    const during = status(pid, 'VmRSS');
    const sentWhenServed = sent;
    await attack;
    const after = status(pid, 'VmRSS');
    const peak = status(pid, 'VmHWM');
    const logged = d.stderr().match(/"msg":"RPC record too large; closing the connection"/g)?.length ?? 0;
    console.log(
      `${mib(sent)} of unfinished RPC records over ${connections} connections: daemon RSS idle ${mib(idle)}, during ${mib(during)}, ` +
        `after ${mib(after)}, peak (VmHWM) ${mib(peak)}; cap ${mib(RSS_CAP)}; ${logged} 'record too large' log lines; ` +
        `the good clients were served between ${mib(64 * MiB)} and ${mib(sentWhenServed)} sent`,
    );
    expect(sent).toBeGreaterThanOrEqual(TOTAL);
    expect(connections).toBeGreaterThan(20);
    // Refusal lines are rate-limited per client address (10 per minute, then a summary).
    expect(logged).toBeGreaterThan(0);
    expect(logged).toBeLessThanOrEqual(10);
    expect(peak).toBeLessThan(RSS_CAP);
  }, 300_000);
});
