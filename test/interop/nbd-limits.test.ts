/**
 * Interop: the daemon process (`rebound serve`) under hostile and broken NBD clients at once:
 *  - 2,000 idle TCP connections that finished their handshakes (the limits are raised for them);
 *  - a slowloris that sends its handshake one byte every 100 ms (dropped by the handshake timeout);
 *  - a client that sends 256 MiB of READs and never reads a reply (its socket is paused);
 * and meanwhile qemu-io writes and reads back a pattern on another connection. The daemon's RSS
 * (/proc/PID/status VmRSS; VmHWM for the peak) is printed idle, with the connections, and after
 * they left, and must stay within a generous bound. The figures go in docs and release notes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeGoData, encodeOption } from '../../src/nbd/messages.js';
import { Cmd, Opt } from '../../src/nbd/protocol.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { missingPeers } from '../helpers/peers.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';
import { run } from '../helpers/run.js';

const MiB = 1024 * 1024;
const IDLE = 2000;
const BATCH = 100;
const HANDSHAKE_TIMEOUT_MS = 5000;
const RSS_BOUND = 256 * MiB;

/** Soft limit of open files of this process (the daemon inherits it). */
function openFilesLimit(): number {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === 'unlimited' ? Infinity : Number(soft);
}

function status(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${key} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;
const missing = missingPeers('qemu-io');
const fdLimit = openFilesLimit();
const needFds = IDLE + 512;
if (fdLimit < needFds) console.warn(`skipping: ulimit -n is ${fdLimit}, the test needs ${needFds} (${IDLE} connections on each side)`);

describe.skipIf(missing.length > 0 || fdLimit < needFds)('NBD interop: limits under hostile clients (daemon process)', () => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-nbd-limits-'));
  const clients: RawNbdClient[] = [];
  let d: DaemonProcess | undefined;
  afterAll(async () => {
    for (const c of clients) c.close();
    await d?.stop('SIGKILL');
    fs.rmSync(data, { recursive: true, force: true });
  });

  it(`serves qemu-io while ${IDLE} idle connections, a slowloris and a non-reading client are connected; RSS stays bounded`, async () => {
    d = await startDaemonProcess([
      '--data', data, '--nbd', '127.0.0.1:0', '--http', 'off', '--export', 'm=memory:64M',
      '--nbd-max-connections', String(IDLE + 100), '--nbd-max-connections-per-client', String(IDLE + 100),
      '--nbd-handshake-timeout', String(HANDSHAKE_TIMEOUT_MS), '--log-format', 'json',
    ]);
    const pid = d.child.pid!;
    const port = Number(d.nbd.split(':').pop());
    const uri = `nbd://${d.nbd}/m`;
    const rssIdle = status(pid, 'VmRSS');

    // The slowloris: one byte of its handshake every 100 ms; the whole of it would take over 40 s.
    const slow = await RawNbdClient.connect({ port });
    clients.push(slow);
    await slow.read(18);
    const slowBytes = Buffer.concat([Buffer.from([0, 0, 0, 3]), encodeOption(Opt.GO, encodeGoData('m'.padEnd(400, '-'), []))]);
    let slowSent = 0;
    const dribbling = (async () => {
      while (slowSent < slowBytes.length && !slow.isClosed) {
        slow.socket.write(slowBytes.subarray(slowSent, slowSent + 1));
        slowSent++;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    // The idle connections, each through its handshake, BATCH at a time.
    for (let i = 0; i < IDLE; i += BATCH) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(BATCH, IDLE - i) }, async () => {
          const c = await RawNbdClient.connect({ port });
          clients.push(c);
          await c.handshake('m', { structured: false });
          return c;
        }),
      );
      expect(batch.every((c) => !c.isClosed)).toBe(true);
    }
    const idle = clients.slice(1);
    const rssConnected = status(pid, 'VmRSS');

    // The client that never reads its replies: 64 READs of 4 MiB.
    const deaf = await RawNbdClient.connect({ port });
    clients.push(deaf);
    await deaf.handshake('m', { structured: false });
    deaf.socket.pause();
    for (let i = 0; i < 64; i++) deaf.request(Cmd.READ, { cookie: BigInt(i + 1), offset: (i % 16) * 4 * MiB, length: 4 * MiB });

    // A real client meanwhile: qemu-io writes a pattern, then reads it back on a new connection.
    const w = await run('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 0x5a 1M 3M', '-c', 'read -P 0x5a 1M 3M'], { timeoutMs: 60_000 });
    expect(w.code, w.stdout + w.stderr).toBe(0);
    expect(w.stdout + w.stderr).not.toMatch(/fail|error/i);
    const r = await run('qemu-io', ['-f', 'raw', '-r', uri, '-c', 'read -P 0x5a 1M 3M', '-c', 'read -P 0 0 1M'], { timeoutMs: 60_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/fail|error/i);

    await dribbling;
    const rssLoaded = status(pid, 'VmRSS');
    const rssPeak = status(pid, 'VmHWM');
    expect(slow.isClosed).toBe(true);
    expect(slowSent).toBeLessThan(slowBytes.length);
    expect(idle.filter((c) => c.isClosed)).toHaveLength(0);
    expect(deaf.isClosed).toBe(false);

    // Everyone leaves; wait (bounded) until the daemon has logged every departure.
    for (const c of clients) c.close();
    const leftAll = (): boolean => (d!.stderr().match(/"msg":"client disconnected"/g)?.length ?? 0) >= IDLE + 1 + 2;
    for (let i = 0; i < 600 && !leftAll(); i++) await new Promise((res) => setTimeout(res, 50));
    expect(leftAll()).toBe(true);
    const rssAfter = status(pid, 'VmRSS');

    console.log(
      `daemon RSS: idle ${mib(rssIdle)}; with ${IDLE} idle connections ${mib(rssConnected)}; ` +
        `plus slowloris, non-reading client and qemu-io ${mib(rssLoaded)} (peak VmHWM ${mib(rssPeak)}); ` +
        `after all left ${mib(rssAfter)}; slowloris dropped after ${slowSent} of ${slowBytes.length} bytes`,
    );
    expect(rssConnected - rssIdle).toBeLessThan(RSS_BOUND);
    expect(rssLoaded - rssIdle).toBeLessThan(RSS_BOUND);
    expect(rssPeak - rssIdle).toBeLessThan(RSS_BOUND);
  }, 180_000);
});
