/**
 * Interop with QEMU's NBD client (qemu-nbd -L, qemu-img, qemu-io) against the in-process server.
 * Exports: `disk` (read-only raw image, see RAW_REGIONS), and writable memory exports.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { startNbd, type NbdFixture } from '../helpers/nbd-fixture.js';
import {
  firstDifference,
  KiB,
  makeFilledImage,
  MiB,
  RAW_REGIONS,
  RAW_SIZE,
  RecordingLayer,
} from '../helpers/nbd-interop.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';
import { tempDir } from '../helpers/images.js';

const missing = missingPeers('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo', 'nbdcopy', 'nbdsh', 'fio');

const MEM_SIZE = 8 * MiB;
const hex = (b: number): string => '0x' + b.toString(16);

/** `read -P BYTE [-s START -l COUNT] OFFSET LENGTH`: the bytes START..START+COUNT of the read are BYTE. */
function readCmd(offset: number, length: number, byte: number, part?: { start: number; count: number }): string {
  const p = part ? ` -s ${part.start} -l ${part.count}` : '';
  return `read -P ${hex(byte)}${p} ${offset} ${length}`;
}

/**
 * Runs qemu-io with `-c` commands and checks that it succeeded: exit 0, no failure message, and
 * one "N/N bytes at offset X" line for every read, write and discard, with the requested numbers.
 */
async function qemuIo(target: string, cmds: string[], opts: string[] = []): Promise<string> {
  const r = await run('qemu-io', ['-f', 'raw', ...opts, target, ...cmds.flatMap((c) => ['-c', c])]);
  const out = r.stdout + r.stderr;
  expect(out).not.toMatch(/failed|error|denied/i);
  expect(r.code, out).toBe(0);
  const verbs: Record<string, string> = { read: 'read', write: 'wrote', discard: 'discard' };
  for (const c of cmds) {
    const words = c.split(/\s+/);
    const verb = verbs[words[0]!];
    if (!verb) continue;
    const [off, len] = words.slice(-2);
    expect(out).toContain(`${verb} ${len}/${len} bytes at offset ${off}\n`);
  }
  return out;
}

interface MapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

async function qemuImgMap(target: string): Promise<MapEntry[]> {
  const r = await runOk('qemu-img', ['map', '--output=json', '-f', 'raw', target]);
  return (JSON.parse(r.stdout) as MapEntry[]).map(({ start, length, data, zero }) => ({ start, length, data, zero }));
}

describe.skipIf(missing.length > 0)('NBD interop: QEMU (qemu-nbd -L, qemu-img, qemu-io)', () => {
  let fx: NbdFixture;
  let dir: string;
  let image: string;
  let expected: Buffer;
  const scratch = new MemoryDevice(MEM_SIZE);
  const scratchRec = new RecordingLayer(scratch);
  const wt = new MemoryDevice(MEM_SIZE);
  const wtRec = new RecordingLayer(wt);
  const inbound = new MemoryDevice(RAW_SIZE);

  beforeAll(async () => {
    dir = tempDir('rebound-qemu-');
    image = path.join(dir, 'disk.img');
    expected = makeFilledImage(image, RAW_SIZE, Object.values(RAW_REGIONS));
    fx = await startNbd([
      { name: 'disk', device: await RawFileDevice.open(image), description: 'raw backup image (read-only)' },
      { name: 'scratch', device: scratchRec, description: 'writable scratch disk' },
      { name: 'wt', device: wtRec, description: 'cache mode tests' },
      { name: 'inbound', device: inbound, description: 'qemu-img convert target' },
    ]);
  });

  afterAll(async () => {
    await fx?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('qemu-nbd -L', () => {
    for (const via of ['unix', 'tcp'] as const) {
      it(`lists every export with description, size and flags (${via})`, async () => {
        const addr = via === 'unix' ? ['-k', fx.socket] : ['-b', '127.0.0.1', '-p', String(fx.port)];
        const { stdout } = await runOk('qemu-nbd', ['-L', ...addr]);
        expect(stdout).toMatch(/^exports available: 4$/m);
        const blocks = new Map(
          stdout.split(/^ export: /m).slice(1).map((b) => [/^'([^']*)'/.exec(b)![1]!, b] as const),
        );
        expect([...blocks.keys()].sort()).toEqual(['disk', 'inbound', 'scratch', 'wt']);
        const disk = blocks.get('disk')!;
        expect(disk).toContain('description: raw backup image (read-only)');
        expect(disk).toMatch(new RegExp(`size:\\s+${RAW_SIZE}\\n`));
        expect(disk).toMatch(/flags: 0x[0-9a-f]+ \(.*\breadonly\b.*\)/);
        expect(disk).toContain('base:allocation');
        const sc = blocks.get('scratch')!;
        expect(sc).toMatch(new RegExp(`size:\\s+${MEM_SIZE}\\n`));
        expect(sc).not.toMatch(/readonly/);
        expect(sc).toMatch(/flags: 0x[0-9a-f]+ \(.*\bflush\b.*\bfua\b.*\btrim\b.*\bzeroes\b.*\)/);
      });
    }
  });

  describe('qemu-img on the read-only raw export', () => {
    it('info reports the raw format and the exact size', async () => {
      const { stdout } = await runOk('qemu-img', ['info', '--output=json', '-f', 'raw', fx.uri('disk')]);
      const info = JSON.parse(stdout) as { 'virtual-size': number; format: string };
      expect(info['virtual-size']).toBe(RAW_SIZE);
      expect(info.format).toBe('raw');
    });

    it('compare finds the export identical to its source image, and a one-byte change', async () => {
      const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', fx.uri('disk'), image]);
      expect(same.stdout.trim(), same.stderr).toBe('Images are identical.');
      expect(same.code).toBe(0);

      const changed = path.join(dir, 'changed.img');
      fs.copyFileSync(image, changed);
      const flip = RAW_REGIONS.c.offset + 100;
      const fd = fs.openSync(changed, 'r+');
      fs.writeSync(fd, Buffer.from([0x00]), 0, 1, flip);
      fs.closeSync(fd);
      const diff = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', fx.uri('disk'), changed]);
      expect(diff.code, diff.stdout + diff.stderr).toBe(1);
      const at = Number(/Content mismatch at offset (\d+)!/.exec(diff.stdout)?.[1]);
      expect(at).toBeLessThanOrEqual(flip);
      expect(flip - at).toBeLessThan(512);
    });

    it('convert copies the export to a local file byte for byte', async () => {
      const out = path.join(dir, 'converted.img');
      await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', fx.uri('disk'), out]);
      const got = fs.readFileSync(out);
      expect(got.length).toBe(RAW_SIZE);
      expect(firstDifference(got, expected)).toBeUndefined();
    });

    it('map covers the whole export and never reports data as zero', async () => {
      const map = await qemuImgMap(fx.uri('disk'));
      let pos = 0;
      for (const e of map) {
        expect(e.start).toBe(pos);
        pos += e.length;
        if (e.zero) {
          // A zero claim must be true; RawFileDevice claims none, but whatever it claims must hold.
          expect(firstDifference(expected.subarray(e.start, e.start + e.length), Buffer.alloc(e.length))).toBeUndefined();
        }
      }
      expect(pos).toBe(RAW_SIZE);
      for (const r of Object.values(RAW_REGIONS)) {
        const covering = map.filter((e) => e.start < r.offset + r.length && e.start + e.length > r.offset);
        expect(covering.every((e) => e.data && !e.zero), JSON.stringify(covering)).toBe(true);
      }
    });
  });

  describe('qemu-io reads on the read-only raw export', () => {
    const { a, c, tail } = RAW_REGIONS;
    const ro = ['-r'];

    it('aligned reads', async () => {
      await qemuIo(fx.uri('disk'), [readCmd(0, 64 * KiB, 0xa5), readCmd(0, a.length, 0xa5), readCmd(1 * MiB, 1 * MiB, 0)], ro);
    });

    it('unaligned reads (offset 1 length 7, offset 12345 length 3000, ...)', async () => {
      await qemuIo(fx.uri('disk'), [readCmd(1, 7, 0xa5), readCmd(12345, 3000, 0xa5), readCmd(777_777, 1, 0xa5)], ro);
    });

    it('reads across data/hole boundaries, aligned and unaligned', async () => {
      const aEnd = a.offset + a.length;
      const cEnd = c.offset + c.length;
      await qemuIo(fx.unixUri('disk'), [
        readCmd(aEnd - 100, 200, 0xa5, { start: 0, count: 100 }),
        readCmd(aEnd - 100, 200, 0x00, { start: 100, count: 100 }),
        readCmd(c.offset - 3, 10, 0x00, { start: 0, count: 3 }),
        readCmd(c.offset - 3, 10, 0x5a, { start: 3, count: 7 }),
        readCmd(c.offset - 4096, 3 * 4096, 0x00, { start: 0, count: 4096 }),
        readCmd(c.offset - 4096, 3 * 4096, 0x5a, { start: 4096, count: 4096 }),
        readCmd(c.offset - 4096, 3 * 4096, 0x00, { start: 8192, count: 4096 }),
        readCmd(cEnd - 5, 9, 0x5a, { start: 0, count: 5 }),
        readCmd(cEnd - 5, 9, 0x00, { start: 5, count: 4 }),
      ], ro);
    });

    it('reads at the very tail of the export', async () => {
      await qemuIo(fx.uri('disk'), [
        readCmd(RAW_SIZE - 1, 1, 0xc3),
        readCmd(RAW_SIZE - 7, 7, 0xc3),
        readCmd(RAW_SIZE - 4096, 4096, 0xc3),
        readCmd(tail.offset, tail.length, 0xc3),
        readCmd(tail.offset - 1, 2, 0x00, { start: 0, count: 1 }),
        readCmd(tail.offset - 1, 2, 0xc3, { start: 1, count: 1 }),
        `read 0 ${RAW_SIZE}`,
      ], ro);
    });

    it('a wrong pattern is detected (the checks above can fail)', async () => {
      const r = await run('qemu-io', ['-f', 'raw', '-r', fx.uri('disk'), '-c', readCmd(1, 7, 0xa6)]);
      expect(r.stdout).toContain('Pattern verification failed at offset 1, 7 bytes');
      expect(r.code).not.toBe(0);
    });

    it('QEMU sees the export as read-only and refuses to open it writable', async () => {
      const r = await run('qemu-io', ['-f', 'raw', fx.uri('disk'), '-c', 'read 0 512']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/Permission denied|read-only/i);
    });
  });

  describe('qemu-io writes on a writable memory export', () => {
    it('write, FUA write, write-zeroes (with and without -u), discard and flush: data, flags and holes', async () => {
      const uri = fx.unixUri('scratch');
      await qemuIo(uri, [
        'write -P 0x11 0 131072',
        'write -f -P 0x22 200001 5000',
        `write -P 0x33 ${1 * MiB} ${512 * KiB}`,
        `write -z ${1088 * KiB} ${128 * KiB}`,
        `write -P 0x44 ${2 * MiB} ${256 * KiB}`,
        `write -z -u ${2 * MiB} ${128 * KiB}`,
        `write -P 0x55 ${3 * MiB} ${256 * KiB}`,
        `discard ${3 * MiB} ${192 * KiB}`,
        'flush',
        // Read back in the same process ...
        readCmd(0, 131072, 0x11),
        readCmd(200001, 5000, 0x22),
        readCmd(1088 * KiB, 128 * KiB, 0),
      ], ['-t', 'writeback']);

      // ... and in a new one, over TCP this time.
      await qemuIo(fx.uri('scratch'), [
        readCmd(0, 131072, 0x11),
        readCmd(131072, 200001 - 131072, 0),
        readCmd(200001 - 1, 5002, 0x22, { start: 1, count: 5000 }),
        readCmd(1 * MiB, 64 * KiB, 0x33),
        readCmd(1088 * KiB, 128 * KiB, 0),
        readCmd(1216 * KiB, 320 * KiB, 0x33),
        readCmd(2 * MiB, 128 * KiB, 0),
        readCmd(2176 * KiB, 128 * KiB, 0x44),
        readCmd(3 * MiB, 192 * KiB, 0),
        readCmd(3264 * KiB, 64 * KiB, 0x55),
        readCmd(3328 * KiB, MEM_SIZE - 3328 * KiB, 0),
      ], ['-r']);

      // The device itself holds exactly that.
      const want = Buffer.alloc(MEM_SIZE);
      want.fill(0x11, 0, 131072);
      want.fill(0x22, 200001, 205001);
      want.fill(0x33, 1 * MiB, 1088 * KiB).fill(0x33, 1216 * KiB, 1536 * KiB);
      want.fill(0x44, 2176 * KiB, 2304 * KiB);
      want.fill(0x55, 3264 * KiB, 3328 * KiB);
      const got = Buffer.alloc(MEM_SIZE);
      await scratch.read(got, 0);
      expect(firstDifference(got, want)).toBeUndefined();

      // The flags crossed the wire: FUA only on `write -f` (writeback cache), NO_HOLE only without -u.
      const calls = scratchRec.calls;
      const writes = calls.filter((c) => c.op === 'write');
      expect(writes.map((w) => [w.offset, w.length, w.fua])).toEqual([
        [0, 131072, false],
        [200001, 5000, true],
        [1 * MiB, 512 * KiB, false],
        [2 * MiB, 256 * KiB, false],
        [3 * MiB, 256 * KiB, false],
      ]);
      expect(calls.filter((c) => c.op === 'zero').map((z) => [z.offset, z.length, z.noHole])).toEqual([
        [1088 * KiB, 128 * KiB, true],
        [2 * MiB, 128 * KiB, false],
      ]);
      expect(calls.filter((c) => c.op === 'trim').map((t) => [t.offset, t.length])).toEqual([[3 * MiB, 192 * KiB]]);
      expect(calls.filter((c) => c.op === 'flush').length).toBeGreaterThanOrEqual(1);
      // The explicit flush came after the last write-path request before it.
      const firstFlush = calls.findIndex((c) => c.op === 'flush');
      expect(calls.slice(0, firstFlush).map((c) => c.op)).toEqual(['write', 'write', 'write', 'zero', 'write', 'zero', 'write', 'trim']);

      // Allocation as seen in-process and by qemu-img map: write -z keeps the range allocated,
      // write -z -u and discard of whole 64 KiB pages leave holes.
      const ext = await scratch.extents(0, MEM_SIZE);
      const holeAt = (off: number): boolean => ext.find((e) => e.offset <= off && off < e.offset + e.length)!.hole;
      expect([holeAt(1088 * KiB), holeAt(2 * MiB), holeAt(3 * MiB), holeAt(2176 * KiB)]).toEqual([false, true, true, false]);

      const map = await qemuImgMap(fx.uri('scratch'));
      expect(map).toEqual([
        { start: 0, length: 128 * KiB, data: true, zero: false },
        { start: 128 * KiB, length: 64 * KiB, data: false, zero: true },
        { start: 192 * KiB, length: 64 * KiB, data: true, zero: false },
        { start: 256 * KiB, length: 768 * KiB, data: false, zero: true },
        { start: 1 * MiB, length: 512 * KiB, data: true, zero: false },
        { start: 1536 * KiB, length: 640 * KiB, data: false, zero: true },
        { start: 2176 * KiB, length: 128 * KiB, data: true, zero: false },
        { start: 2304 * KiB, length: 960 * KiB, data: false, zero: true },
        { start: 3264 * KiB, length: 64 * KiB, data: true, zero: false },
        { start: 3328 * KiB, length: MEM_SIZE - 3328 * KiB, data: false, zero: true },
      ]);
    });

    it('cache modes: writethrough sends FUA on every write, -t none only on write -f', async () => {
      await qemuIo(fx.uri('wt'), ['write -P 0x61 0 65536', 'write -z 65536 4096', readCmd(0, 65536, 0x61)]);
      let calls = wtRec.calls.splice(0);
      expect(calls.filter((c) => c.op === 'write').map((c) => [c.offset, c.length, c.fua])).toEqual([[0, 65536, true]]);
      expect(calls.filter((c) => c.op === 'zero').map((c) => [c.offset, c.length, c.fua])).toEqual([[65536, 4096, true]]);

      await qemuIo(fx.uri('wt'), [
        'write -f -P 0x62 131072 4096',
        'write -P 0x63 135168 4096',
        'flush',
        readCmd(131072, 4096, 0x62),
        readCmd(135168, 4096, 0x63),
      ], ['-t', 'none']);
      calls = wtRec.calls.splice(0);
      expect(calls.filter((c) => c.op === 'write').map((c) => [c.offset, c.fua])).toEqual([
        [131072, true],
        [135168, false],
      ]);
      expect(calls.some((c) => c.op === 'flush')).toBe(true);

      const got = Buffer.alloc(139264);
      await wt.read(got, 0);
      const want = Buffer.alloc(139264).fill(0x61, 0, 65536).fill(0x62, 131072, 135168).fill(0x63, 135168);
      expect(firstDifference(got, want)).toBeUndefined();
    });

    it('qemu-img convert -n writes a local image into the export (over stale contents)', async () => {
      await inbound.write(Buffer.alloc(RAW_SIZE, 0xee), 0);
      await runOk('qemu-img', ['convert', '-n', '-W', '-m', '8', '-f', 'raw', '-O', 'raw', image, fx.uri('inbound')]);
      const got = Buffer.alloc(RAW_SIZE);
      await inbound.read(got, 0);
      expect(firstDifference(got, expected)).toBeUndefined();
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', fx.uri('inbound'), image]);
      expect(cmp.stdout.trim(), cmp.stderr).toBe('Images are identical.');
    });
  });
});
