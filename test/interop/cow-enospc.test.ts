/**
 * Out of space: the overlay on a deliberately small filesystem (a 4 MiB tmpfs), and a quota.
 * The client gets ENOSPC, the daemon keeps serving on the same connection, nothing flushed is lost,
 * and writes succeed again once room is made.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { CowOverlay } from '../../src/blockdev/layers/cow/cow-overlay.js';
import { NbdClient } from '../../src/nbd/client.js';
import { BlockError } from '../../src/errors.js';
import { makeImage, tempDir } from '../helpers/images.js';
import { startNbd, type NbdFixture } from '../helpers/nbd-fixture.js';
import { run } from '../helpers/run.js';

const dir = tempDir();
const mnt = path.join(dir, 'small-fs');
let mounted = false;
let fx: NbdFixture | undefined;

beforeAll(async () => {
  fs.mkdirSync(mnt);
  const r = await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
  mounted = r.code === 0;
  if (!mounted) {
    if (process.env.CI) throw new Error(`cannot mount a tmpfs for the ENOSPC test: ${r.stderr}`);
    console.warn(`skipping ENOSPC test: cannot mount tmpfs (${r.stderr.trim()})`);
  }
});

afterAll(async () => {
  await fx?.close();
  if (mounted) await run('umount', ['-l', mnt]);
  fs.rmSync(dir, { recursive: true, force: true });
});

const code = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: BlockError) => e.code);

describe('cow overlay out of space', () => {
  it('a full filesystem gives ENOSPC; the connection, the overlay and flushed data survive; room makes writes work again', async () => {
    if (!mounted) return;
    const base = path.join(dir, 'base.img');
    makeImage(base, { size: 64 * 1024 * 1024, data: [[0, 1024 * 1024]] });
    const overlay = await CowOverlay.open(await RawFileDevice.open(base), { dir: path.join(mnt, 'overlay'), baseId: base });
    fx = await startNbd([{ name: 'vm', device: overlay }]);
    const filler = path.join(mnt, 'filler');
    fs.writeFileSync(filler, Buffer.alloc(1024 * 1024, 1));

    const c = await NbdClient.connect(fx.unixUri('vm'));
    const chunk = (i: number): Buffer => Buffer.alloc(256 * 1024, i & 0xff);
    let written = 0;
    let failure = 'ok';
    for (let i = 0; i < 64 && failure === 'ok'; i++) {
      failure = await code(c.write(chunk(i + 1), i * 256 * 1024));
      if (failure === 'ok') {
        written++;
        expect(await code(c.flush())).toBe('ok');
      }
    }
    expect(failure).toBe('ENOSPC');
    expect(written).toBeGreaterThan(2);
    expect(await code(c.flush())).toBe('ok'); // flush after ENOSPC still works

    // The same connection still serves, and every flushed chunk is intact.
    for (let i = 0; i < written; i++) {
      const got = Buffer.alloc(256 * 1024);
      await c.read(got, i * 256 * 1024);
      expect(got.equals(chunk(i + 1)), `chunk ${i}`).toBe(true);
    }
    // Room is made: the next write succeeds.
    fs.rmSync(filler);
    expect(await code(c.write(chunk(200), written * 256 * 1024))).toBe('ok');
    expect(await code(c.flush())).toBe('ok');
    await c.close();
  });

  it('a quota gives ENOSPC over NBD and frees up after a trim', async () => {
    const base = path.join(dir, 'base2.img');
    makeImage(base, { size: 16 * 1024 * 1024, data: [] });
    const overlay = await CowOverlay.open(await RawFileDevice.open(base), { dir: path.join(dir, 'ov2'), baseId: base, maxBytes: 1024 * 1024 });
    const own = await startNbd([{ name: 'q', device: overlay }]);
    try {
      const c = await NbdClient.connect(own.unixUri('q'));
      expect(await code(c.write(Buffer.alloc(1024 * 1024, 9), 0))).toBe('ok');
      await c.flush();
      expect(await code(c.write(Buffer.alloc(4096, 9), 2 * 1024 * 1024))).toBe('ENOSPC');
      expect(await code(c.trim(0, 512 * 1024))).toBe('ok');
      expect(await code(c.write(Buffer.alloc(4096, 7), 2 * 1024 * 1024))).toBe('ok');
      const got = Buffer.alloc(4096);
      await c.read(got, 600 * 1024);
      expect(got.every((b) => b === 9)).toBe(true);
      expect(overlay.stats()).toMatchObject({ maxBytes: 1024 * 1024, allocatedBytes: 512 * 1024 + 4096 });
      await c.close();
    } finally {
      await own.close();
    }
  });
});
