/**
 * Regression: on a read-only NBD export, a write with a flag the export does not advertise (FUA,
 * FAST_ZERO) was refused with EINVAL by the flag check, not with EPERM: the client was told its
 * request was malformed instead of that the export is read-only (found by the interop tests with a
 * FUA write). Fixed in 4880a5e ("NBD: refuse write-path commands on read-only exports with EPERM
 * before flag checks"). Driven through the daemon process with raw NBD frames.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Cmd, CmdFlag, NbdErrno, TFlag } from '../../src/nbd/protocol.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { patternBuffer, tempDir } from '../helpers/images.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';

const SIZE = 1024 * 1024;
let dir: string;
let image: string;
let daemon: DaemonProcess | undefined;

beforeAll(async () => {
  dir = tempDir('rebound-regress-ro-');
  image = path.join(dir, 'ro.img');
  fs.writeFileSync(image, patternBuffer(0, SIZE));
  daemon = await startDaemonProcess(['--data', path.join(dir, 'data'), '--nbd', '127.0.0.1:0', '--http', 'off', '--export', `ro=${image}`]);
});
afterAll(async () => {
  await daemon?.stop('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

it('answers EPERM to write-path commands with unadvertised flags, and keeps the connection', async () => {
  const digest = crypto.createHash('sha256').update(fs.readFileSync(image)).digest('hex');
  const c = await RawNbdClient.connect({ port: Number(daemon!.nbd.split(':').pop()) });
  const { flags } = await c.handshake('ro', { structured: false });
  expect(flags & TFlag.READ_ONLY).not.toBe(0);
  const cases: Array<[string, () => void]> = [
    ['WRITE+FUA', () => c.request(Cmd.WRITE, { cookie: 1n, flags: CmdFlag.FUA, offset: 0, payload: Buffer.alloc(4096, 1) })],
    ['WRITE_ZEROES+FAST_ZERO', () => c.request(Cmd.WRITE_ZEROES, { cookie: 2n, flags: CmdFlag.FAST_ZERO, offset: 0, length: 4096 })],
    ['WRITE_ZEROES+FUA+NO_HOLE', () => c.request(Cmd.WRITE_ZEROES, { cookie: 3n, flags: CmdFlag.FUA | CmdFlag.NO_HOLE, offset: 0, length: 4096 })],
    ['TRIM+FUA', () => c.request(Cmd.TRIM, { cookie: 4n, flags: CmdFlag.FUA, offset: 0, length: 4096 })],
    ['WRITE', () => c.request(Cmd.WRITE, { cookie: 5n, offset: 4096, payload: Buffer.alloc(512, 2) })],
  ];
  for (const [name, send] of cases) {
    send();
    expect((await c.reply()).error, name).toBe(NbdErrno.EPERM);
  }
  c.request(Cmd.READ, { cookie: 6n, offset: 0, length: 4096 });
  const r = await c.reply(4096);
  expect(r.error).toBe(0);
  expect(r.payload.equals(patternBuffer(0, 4096))).toBe(true);
  c.close();
  expect(crypto.createHash('sha256').update(fs.readFileSync(image)).digest('hex')).toBe(digest);
});
