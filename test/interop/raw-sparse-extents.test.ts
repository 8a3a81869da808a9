/**
 * A sparse raw file exported read-only: its holes come from SEEK_DATA/SEEK_HOLE (the native addon,
 * src/native), so real clients see them. `nbdinfo --map` and `qemu-img map` over the NBD export
 * must report the same data/hole layout as `qemu-img map` of the file itself, nbdcopy copies it
 * exactly, and a backup of it reads only the chunks holding data.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { seeker, seekerError } from '../../src/native/seek.js';
import { backup } from '../../src/repo/ingest.js';
import { Repository } from '../../src/repo/repository.js';
import { startNbd, type NbdFixture } from '../helpers/nbd-fixture.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';
import { tempDir } from '../helpers/images.js';

const missing = missingPeers('qemu-img', 'nbdinfo', 'nbdcopy');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SIZE = 64 * GiB;
/** Data at unaligned offsets, one run crossing chunk boundaries, and the file's very last byte. */
const WRITES: Array<[number, number]> = [
  [100 * MiB + 3, 5],
  [GiB - 2 * MiB + 4097, 3 * MiB],
  [40 * GiB, 64 * 1024],
  [SIZE - 1, 1],
];

interface QemuMapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

/** [start, end, data] runs of a qemu-img map, adjacent runs of the same kind merged. */
function runs(map: QemuMapEntry[]): Array<[number, number, boolean]> {
  const out: Array<[number, number, boolean]> = [];
  for (const e of map) {
    const last = out[out.length - 1];
    if (last && last[2] === e.data && last[1] === e.start) last[1] += e.length;
    else out.push([e.start, e.start + e.length, e.data]);
  }
  return out;
}

describe.skipIf(missing.length > 0)('a sparse raw export shows its holes (SEEK_DATA/SEEK_HOLE)', () => {
  let dir: string;
  let image: string;
  let fx: NbdFixture;
  const written = new Map<number, Buffer>();

  beforeAll(async () => {
    if (!seeker()) throw new Error(`the native addon is not built (tools/build-native.sh): ${seekerError()}`);
    dir = tempDir('rebound-sparse-');
    image = path.join(dir, 'sparse.raw');
    const fd = fs.openSync(image, 'w');
    fs.ftruncateSync(fd, SIZE);
    for (const [off, len] of WRITES) {
      const b = crypto.randomBytes(len);
      b[0] = 1; // never a zero first byte: every write is visible data
      fs.writeSync(fd, b, 0, len, off);
      written.set(off, b);
    }
    fs.closeSync(fd);
    fx = await startNbd([{ name: 'sparse', device: await RawFileDevice.open(image) }]);
  });
  afterAll(async () => {
    await fx?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('qemu-img map and nbdinfo --map over NBD match qemu-img map of the file, with holes', async () => {
    const local = runs(JSON.parse((await runOk('qemu-img', ['map', '--output=json', '-f', 'raw', image])).stdout) as QemuMapEntry[]);
    expect(local.filter((r) => !r[2]).length, 'the temp filesystem keeps the file sparse').toBeGreaterThan(0);
    const remote = runs(JSON.parse((await runOk('qemu-img', ['map', '--output=json', '-f', 'raw', fx.unixUri('sparse')])).stdout) as QemuMapEntry[]);
    expect(remote).toEqual(local);

    const nbd = JSON.parse((await runOk('nbdinfo', ['--map', '--json', fx.unixUri('sparse')])).stdout) as Array<{ offset: number; length: number; type: number }>;
    const viaNbdinfo = runs(nbd.map((e) => ({ start: e.offset, length: e.length, data: (e.type & 1) === 0, zero: (e.type & 2) !== 0 })));
    expect(viaNbdinfo).toEqual(local);
    // Every write lies inside a data run.
    for (const [off, len] of WRITES) {
      expect(viaNbdinfo.some(([s, e, data]) => data && s <= off && off + len <= e), `write at ${off}`).toBe(true);
    }
  });

  it('nbdcopy copies it exactly, holes staying holes', async () => {
    const out = path.join(dir, 'copy.raw');
    await runOk('nbdcopy', [fx.unixUri('sparse'), out], { timeoutMs: 120_000 });
    expect(fs.statSync(out).size).toBe(SIZE);
    expect(fs.statSync(out).blocks * 512).toBeLessThan(64 * MiB);
    const fd = fs.openSync(out, 'r');
    try {
      for (const [off, b] of written) {
        const got = Buffer.alloc(b.length);
        fs.readSync(fd, got, 0, b.length, off);
        expect(got.equals(b), `data at ${off}`).toBe(true);
      }
    } finally {
      fs.closeSync(fd);
    }
    fs.rmSync(out);
  });

  it('a backup reads only the chunks holding data and restores the same bytes', async () => {
    const repo = await Repository.open(path.join(dir, 'data'), { chunkSize: MiB });
    try {
      const m = await backup(repo, { vm: 'vm', disks: [{ name: 'disk0', source: image }] });
      const dataChunks = new Set<number>();
      for (const [off, len] of WRITES) for (let c = Math.floor(off / MiB); c <= Math.floor((off + len - 1) / MiB); c++) dataChunks.add(c);
      // Whole 1 MiB chunks around each data run, nothing of the holes in between.
      expect(m.disks[0]!.readBytes).toBeLessThanOrEqual(dataChunks.size * MiB);
      expect(m.disks[0]!.readBytes).toBeGreaterThan(0);
      const img = await repo.openImage(m, 'disk0');
      try {
        for (const [off, b] of written) {
          const got = Buffer.alloc(b.length);
          await img.read(got, off);
          expect(got.equals(b), `restore point data at ${off}`).toBe(true);
        }
      } finally {
        await img.close();
      }
    } finally {
      await repo.close();
    }
  });
});
