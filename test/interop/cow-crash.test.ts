/**
 * Crash test for the copy-on-write overlay: a writer issues random writes (mixed sizes, unaligned),
 * FUA writes, trims, zeroes and flushes over NBD while the real daemon process is killed with
 * SIGKILL at a random moment. After each restart, every byte that was settled by an acknowledged
 * FLUSH (or FUA write) and not touched since must read back exactly, and the base image's sha256
 * and mtime never change. Rounds: REBOUND_CRASH_ROUNDS (default 20).
 *
 * The model: `durable` holds what the disk must show for settled bytes; `uncertain` marks bytes
 * written (or in flight) since they were last settled, which may legitimately show the old or a
 * newer value after a crash.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage, tempDir } from '../helpers/images.js';

const SIZE = 16 * 1024 * 1024;
const ROUNDS = Number(process.env.REBOUND_CRASH_ROUNDS ?? 20);
const dir = tempDir('rebound-crash-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return s / 0x100000000;
  };
}

function fingerprint(file: string): { sha256: string; mtimeMs: number } {
  return { sha256: crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex'), mtimeMs: fs.statSync(file).mtimeMs };
}

interface Op {
  kind: 'write' | 'fua' | 'trim' | 'zero';
  offset: number;
  length: number;
  data?: Buffer;
  noHole?: boolean;
}

function randomOp(r: () => number): Op {
  const x = r();
  const pick = r();
  const length =
    pick < 0.2 ? 1 + Math.floor(r() * 511) : pick < 0.7 ? 512 + Math.floor(r() * 65024) : 65536 + Math.floor(r() * 196608);
  const offset = Math.floor(r() * (SIZE - length));
  if (x < 0.6 || x >= 0.9) {
    const data = Buffer.allocUnsafe(length);
    crypto.randomFillSync(data);
    return { kind: x < 0.6 ? 'write' : 'fua', offset, length, data };
  }
  return { kind: x < 0.75 ? 'trim' : 'zero', offset, length, noHole: r() < 0.5 };
}

async function readAll(c: NbdClient): Promise<Buffer> {
  const out = Buffer.alloc(c.size);
  const step = 4 * 1024 * 1024;
  await Promise.all(Array.from({ length: c.size / step }, (_, i) => c.read(out.subarray(i * step, (i + 1) * step), i * step)));
  return out;
}

describe('cow overlay survives kill -9', () => {
  it(`keeps every flushed write across ${ROUNDS} SIGKILL rounds, base untouched`, async () => {
    const base = path.join(dir, 'base.img');
    const initial = makeImage(base, { size: SIZE, data: [[0, 2 * 1024 * 1024], [9 * 1024 * 1024 + 7, 1_000_000]] });
    const before = fingerprint(base);
    const sock = path.join(dir, 'nbd.sock');
    const args = ['--data', path.join(dir, 'data'), '--nbd', 'none', '--nbd-socket', sock, '--http', 'off', '--export', `vm=${base},cow`];
    const uri = `nbd+unix:///vm?socket=${sock}`;

    const durable = Buffer.from(initial);
    const current = Buffer.from(initial);
    const uncertain = new Uint8Array(SIZE);
    const r = rng(20261122);
    let daemon: DaemonProcess = await startDaemonProcess(args);
    let stats = { acked: 0, flushes: 0, inflightAtKill: 0 };

    try {
      for (let round = 1; round <= ROUNDS; round++) {
        const client = await NbdClient.connect(uri);
        const killAfter = 100 + Math.floor(r() * 700);
        const killer = setTimeout(() => daemon.child.kill('SIGKILL'), killAfter);
        try {
          for (;;) {
            if (r() < 0.15) {
              await client.flush(); // a barrier: nothing else is in flight
              durable.set(current);
              uncertain.fill(0);
              stats.flushes++;
              continue;
            }
            // A batch of up to 8 non-overlapping requests in flight at once.
            const batch: Op[] = [];
            for (let i = 0, n = 1 + Math.floor(r() * 8); i < n; i++) {
              const op = randomOp(r);
              if (batch.every((b) => op.offset + op.length <= b.offset || b.offset + b.length <= op.offset)) batch.push(op);
            }
            for (const op of batch) uncertain.fill(1, op.offset, op.offset + op.length);
            const results = await Promise.allSettled(
              batch.map((op) =>
                op.kind === 'write' || op.kind === 'fua'
                  ? client.write(op.data!, op.offset, { fua: op.kind === 'fua' })
                  : op.kind === 'trim'
                    ? client.trim(op.offset, op.length)
                    : client.zero(op.offset, op.length, { noHole: op.noHole }),
              ),
            );
            results.forEach((res, i) => {
              if (res.status !== 'fulfilled') return;
              const op = batch[i]!;
              if (op.data) op.data.copy(current, op.offset);
              else current.fill(0, op.offset, op.offset + op.length);
              if (op.kind === 'fua') {
                current.copy(durable, op.offset, op.offset, op.offset + op.length);
                uncertain.fill(0, op.offset, op.offset + op.length);
              }
              stats.acked++;
            });
            const failed = results.filter((x) => x.status === 'rejected');
            if (failed.length) {
              stats.inflightAtKill += failed.length;
              break; // the daemon is gone
            }
          }
        } catch {
          // a flush interrupted by the kill: its writes stay uncertain
        } finally {
          clearTimeout(killer);
          client.destroy();
        }
        await daemon.exited;

        daemon = await startDaemonProcess(args);
        const check = await NbdClient.connect(uri);
        const actual = await readAll(check);
        await check.close();
        let bad = -1;
        for (let i = 0; i < SIZE; i++) {
          if (!uncertain[i] && actual[i] !== durable[i]) {
            bad = i;
            break;
          }
        }
        expect(bad, `round ${round}: byte ${bad} differs from the last flushed state (${JSON.stringify(stats)})\n${daemon.stderr()}`).toBe(-1);
        // What the disk holds now is the starting point of the next round.
        actual.copy(durable);
        actual.copy(current);
        uncertain.fill(0);
      }
    } finally {
      await daemon.stop('SIGTERM');
    }
    expect(fingerprint(base)).toEqual(before);
    expect(stats.flushes).toBeGreaterThan(ROUNDS);
    expect(stats.acked).toBeGreaterThan(ROUNDS * 5);
    console.log(`crash test: ${ROUNDS} rounds, ${stats.acked} acknowledged writes, ${stats.flushes} flushes, ${stats.inflightAtKill} requests cut by SIGKILL`);
  }, 300_000);
});
