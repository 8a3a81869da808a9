/**
 * NBD requests up to 64 MiB, as nbdkit takes them (a peer's conformance trace with 50 MB requests
 * failed against the old 32 MiB limit). The limit is advertised in INFO_BLOCK_SIZE; nbdsh (libnbd,
 * strict mode off) writes and reads back 40 MiB in one request on a cow export; a WRITE over
 * 64 MiB gets an error reply after its payload was consumed, and the same connection keeps
 * working. A WRITE too large to skip (over 128 MiB) still drops the connection.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { CowOverlay } from '../../src/blockdev/layers/cow/cow-overlay.js';
import { encodeGoData } from '../../src/nbd/messages.js';
import { Cmd, NbdErrno, Opt, Rep } from '../../src/nbd/protocol.js';
import { makeImage, tempDir } from '../helpers/images.js';
import { startNbd, type NbdFixture } from '../helpers/nbd-fixture.js';
import { missingPeers, NBDSH } from '../helpers/peers.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';
import { runOk } from '../helpers/run.js';

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
const missing = missingPeers('nbdsh');

describe('NBD requests up to 64 MiB', () => {
  let dir: string;
  let fx: NbdFixture;
  let overlay: CowOverlay;

  beforeAll(async () => {
    dir = tempDir('rebound-nbd64-');
    const base = path.join(dir, 'base.raw');
    makeImage(base, { size: SIZE, data: [[0, 16 * MiB]] });
    overlay = await CowOverlay.open(await RawFileDevice.open(base), { dir: path.join(dir, 'overlay'), baseId: base });
    fx = await startNbd([{ name: 'vm', device: overlay }]);
  });
  afterAll(async () => {
    await fx?.close();
    await overlay?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('advertises a 64 MiB maximum block size', async () => {
    const c = await RawNbdClient.connect({ path: fx.socket });
    try {
      await c.greet();
      const replies = await c.option(Opt.GO, encodeGoData('vm', [3]));
      expect(replies.at(-1)!.type).toBe(Rep.ACK);
      const bs = replies.find((r) => r.type === Rep.INFO && r.data.readUInt16BE(0) === 3)!;
      expect(bs.data.readUInt32BE(10)).toBe(64 * MiB);
    } finally {
      c.close();
    }
  });

  it.skipIf(missing.length > 0)('nbdsh (strict mode off) writes and reads back 40 MiB in one request on a cow export', async () => {
    const code = [
      'import json, hashlib',
      'h.set_strict_mode(0)',
      'buf = bytes((i * 7 + 3) % 251 for i in range(40 * 1024 * 1024))',
      `h.pwrite(buf, ${5 * MiB + 512})`,
      `back = h.pread(40 * 1024 * 1024, ${5 * MiB + 512})`,
      'print(json.dumps({"same": back == buf, "sha": hashlib.sha256(back).hexdigest(), "max": h.get_block_size(nbd.SIZE_MAXIMUM)}))',
    ].join('\n');
    const r = await runOk(NBDSH[0]!, [...NBDSH.slice(1), '-u', fx.unixUri('vm'), '-c', code], { timeoutMs: 120_000 });
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { same: boolean; sha: string; max: number };
    expect(out.same).toBe(true);
    expect(out.max).toBe(64 * MiB);
    // The bytes landed in the overlay: read them in-process too.
    const got = Buffer.alloc(40 * MiB);
    await overlay.read(got, 5 * MiB + 512);
    expect(crypto.createHash('sha256').update(got).digest('hex')).toBe(out.sha);
  });

  it('a 65 MiB WRITE gets an error reply after its payload, and the connection keeps working', async () => {
    const c = await RawNbdClient.connect({ path: fx.socket });
    try {
      await c.handshake('vm');
      const big = Buffer.alloc(65 * MiB, 0x5a);
      c.request(Cmd.WRITE, { cookie: 7n, offset: 100 * MiB, payload: big });
      const r = await c.reply(0, 60_000);
      expect(r.cookie).toBe(7n);
      expect(r.error).toBe(NbdErrno.EOVERFLOW);
      // Nothing was written.
      const check = Buffer.alloc(MiB);
      await overlay.read(check, 100 * MiB);
      expect(check.equals(Buffer.alloc(MiB))).toBe(true);
      // The same connection: a 64 MiB WRITE and a READ of it work.
      const ok = crypto.randomBytes(64 * MiB);
      c.request(Cmd.WRITE, { cookie: 8n, offset: 120 * MiB, payload: ok });
      expect(await c.reply(0, 60_000)).toMatchObject({ cookie: 8n, error: 0 });
      c.request(Cmd.READ, { cookie: 9n, offset: 120 * MiB + 4096, length: 4096 });
      const chunks = await c.chunks(60_000);
      const data = Buffer.concat(chunks.map((x) => x.payload.subarray(8)));
      expect(data.equals(ok.subarray(4096, 8192))).toBe(true);
      expect(c.isClosed).toBe(false);
    } finally {
      c.close();
    }
  });

  it('a READ over 64 MiB gets EOVERFLOW; a WRITE header over 128 MiB drops the connection', async () => {
    const c = await RawNbdClient.connect({ path: fx.socket });
    try {
      await c.handshake('vm');
      c.request(Cmd.READ, { cookie: 1n, offset: 0, length: 64 * MiB + 1 });
      const [err] = await c.chunks(30_000);
      expect(err!.error).toBe(NbdErrno.EOVERFLOW);
      c.request(Cmd.WRITE, { cookie: 2n, offset: 0, length: 129 * MiB });
      expect(await c.closedWithin(10_000)).toBe(true);
    } finally {
      c.close();
    }
  });
});
