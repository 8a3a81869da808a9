/**
 * Interop with libnbd's tools (nbdinfo, nbdcopy, nbdsh) and fio's nbd engine against the in-process
 * server. Exports: `disk` (read-only raw image, see RAW_REGIONS) and writable memory exports.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { startNbd, type NbdFixture } from '../helpers/nbd-fixture.js';
import {
  captureLog,
  connectionsTo,
  firstDifference,
  KiB,
  makeFilledImage,
  MiB,
  RAW_REGIONS,
  RAW_SIZE,
  type LogEvent,
} from '../helpers/nbd-interop.js';
import { missingPeers, NBDSH } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';
import { patternBuffer, tempDir } from '../helpers/images.js';

const missing = missingPeers('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo', 'nbdcopy', 'nbdsh', 'fio');

const MEM_SIZE = 8 * MiB;
/** Larger than 3 x nbdcopy's 128 MiB work slice, so several threads (and connections) get work. */
const BIG_SIZE = 512 * MiB;
const BIG_DATA = [0, 1, 2, 3].map((i) => i * 128 * MiB + 12345).concat(BIG_SIZE - MiB);

interface NbdinfoExport {
  'export-name': string;
  description?: string;
  'export-size': number;
  is_read_only: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_fast_zero: boolean;
  can_multi_conn: boolean;
  contexts: string[];
}

interface MapExtent {
  offset: number;
  length: number;
  type: number;
  description: string;
}

const STATE_HOLE = 1;
const STATE_ZERO = 2;

async function nbdinfoJson(args: string[]): Promise<{ exports: NbdinfoExport[] }> {
  const r = await runOk('nbdinfo', ['--json', ...args]);
  return JSON.parse(r.stdout) as { exports: NbdinfoExport[] };
}

async function nbdinfoMap(uri: string): Promise<MapExtent[]> {
  const r = await runOk('nbdinfo', ['--map', '--json', uri]);
  return JSON.parse(r.stdout) as MapExtent[];
}

/** Checks that a map covers [0, size) contiguously and claims zero only where `bytes` are zero. */
function checkMap(map: MapExtent[], size: number, bytes: Buffer): void {
  let pos = 0;
  for (const e of map) {
    expect(e.offset).toBe(pos);
    if (e.type & STATE_ZERO) {
      const nonZero = firstDifference(bytes.subarray(e.offset, e.offset + e.length), Buffer.alloc(e.length));
      expect(nonZero, `extent ${JSON.stringify(e)} claims zero over data`).toBeUndefined();
    }
    pos += e.length;
  }
  expect(pos).toBe(size);
}

/** Runs a Python snippet in nbdsh connected to `uri` (h = handle); the snippet prints one JSON line. */
async function nbdsh<T>(uri: string, code: string): Promise<T> {
  const r = await runOk(NBDSH[0]!, [...NBDSH.slice(1), '-u', uri, '-c', code]);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
}

/** Reads the whole of a device in-process. */
async function contents(dev: MemoryDevice, offset = 0, length = dev.size): Promise<Buffer> {
  const b = Buffer.alloc(length);
  await dev.read(b, offset);
  return b;
}

interface FioJob {
  error: number;
  read: { io_bytes: number; total_ios: number };
  write: { io_bytes: number; total_ios: number };
}

describe.skipIf(missing.length > 0)('NBD interop: libnbd tools (nbdinfo, nbdcopy, nbdsh) and fio', () => {
  let fx: NbdFixture;
  let dir: string;
  let image: string;
  let expected: Buffer;
  let events: LogEvent[];
  const mapped = new MemoryDevice(MEM_SIZE);
  const inbound = new MemoryDevice(RAW_SIZE);
  const big = new MemoryDevice(BIG_SIZE);
  const fioDev = new MemoryDevice(MEM_SIZE);

  beforeAll(async () => {
    dir = tempDir('rebound-libnbd-');
    image = path.join(dir, 'disk.img');
    expected = makeFilledImage(image, RAW_SIZE, Object.values(RAW_REGIONS));
    for (const off of BIG_DATA) await big.write(patternBuffer(off, MiB), off);
    const captured = captureLog();
    events = captured.events;
    fx = await startNbd(
      [
        { name: 'disk', device: await RawFileDevice.open(image), description: 'raw backup image (read-only)' },
        { name: 'mapped', device: mapped, description: 'memory disk for --map' },
        { name: 'inbound', device: inbound, description: 'nbdcopy target' },
        { name: 'big', device: big, description: 'sparse 512 MiB memory disk' },
        { name: 'fio', device: fioDev, description: 'fio write target' },
      ],
      { log: captured.log },
    );
  });

  afterAll(async () => {
    await fx?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('nbdinfo', () => {
    it('--list shows every export with its description', async () => {
      const text = await runOk('nbdinfo', ['--list', fx.uri('')]);
      expect(text.stdout).toMatch(/export="disk":\n\tdescription: raw backup image \(read-only\)\n/);
      expect(text.stdout).toMatch(/export="big":\n\tdescription: sparse 512 MiB memory disk\n/);

      const { exports } = await nbdinfoJson(['--list', fx.unixUri('')]);
      expect(exports.map((e) => [e['export-name'], e.description, e['export-size'], e.is_read_only])).toEqual([
        ['disk', 'raw backup image (read-only)', RAW_SIZE, true],
        ['mapped', 'memory disk for --map', MEM_SIZE, false],
        ['inbound', 'nbdcopy target', RAW_SIZE, false],
        ['big', 'sparse 512 MiB memory disk', BIG_SIZE, false],
        ['fio', 'fio write target', MEM_SIZE, false],
      ]);
    });

    it('--json reports size and capabilities of a read-only raw export and a writable memory export', async () => {
      const [disk] = (await nbdinfoJson([fx.uri('disk')])).exports;
      expect(disk).toMatchObject({
        'export-name': 'disk',
        'export-size': RAW_SIZE,
        is_read_only: true,
        can_flush: true,
        can_fua: false,
        can_trim: false,
        can_zero: false,
        can_fast_zero: false,
        can_multi_conn: true,
      });
      expect(disk!.contexts).toContain('base:allocation');

      const [mem] = (await nbdinfoJson([fx.unixUri('mapped')])).exports;
      expect(mem).toMatchObject({
        'export-name': 'mapped',
        'export-size': MEM_SIZE,
        is_read_only: false,
        can_flush: true,
        can_fua: true,
        can_trim: true,
        can_zero: true,
        can_fast_zero: true,
        can_multi_conn: true,
      });
    });

    it('--is read-only / --can write answer through the exit status', async () => {
      expect((await run('nbdinfo', ['--is', 'read-only', fx.uri('disk')])).code).toBe(0);
      expect((await run('nbdinfo', ['--is', 'read-only', fx.uri('mapped')])).code).toBe(2);
      expect((await run('nbdinfo', ['--can', 'write', fx.uri('disk')])).code).toBe(2);
      expect((await run('nbdinfo', ['--can', 'write', fx.uri('mapped')])).code).toBe(0);
    });

    it('--map on the raw export: full coverage, data regions are data, nothing with data is called zero', async () => {
      const map = await nbdinfoMap(fx.uri('disk'));
      checkMap(map, RAW_SIZE, expected);
      for (const r of Object.values(RAW_REGIONS)) {
        const covering = map.filter((e) => e.offset < r.offset + r.length && e.offset + e.length > r.offset);
        expect(covering.map((e) => e.type), `region at ${r.offset}`).toEqual(covering.map(() => 0));
      }
    });

    it('--map on a memory export after nbdsh writes, zeroes and trims: exact data/hole extents', async () => {
      const done = await nbdsh<{ ok: boolean }>(
        fx.uri('mapped'),
        [
          'import json',
          "h.pwrite(b'\\x11' * 131072, 0)",
          "h.pwrite(b'\\x22' * 5000, 200001)",
          "h.pwrite(b'\\x33' * 524288, 1048576)",
          'h.zero(131072, 1114112, nbd.CMD_FLAG_NO_HOLE)',
          'h.zero(65536, 1245184)',
          "h.pwrite(b'\\x44' * 262144, 2097152)",
          'h.trim(131072, 2097152)',
          'h.zero(100, 2297152)',
          "h.pwrite(b'\\x55' * 10, 8388598)",
          'h.flush()',
          "print(json.dumps({'ok': h.pread(7, 200002) == b'\\x22' * 7}))",
        ].join('\n'),
      );
      expect(done.ok).toBe(true);

      const want = Buffer.alloc(MEM_SIZE);
      want.fill(0x11, 0, 131072).fill(0x22, 200001, 205001);
      want.fill(0x33, 1 * MiB, 1088 * KiB).fill(0x33, 1280 * KiB, 1536 * KiB);
      want.fill(0x44, 2176 * KiB, 2304 * KiB).fill(0, 2297152, 2297252);
      want.fill(0x55, MEM_SIZE - 10);
      expect(firstDifference(await contents(mapped), want)).toBeUndefined();

      const map = await nbdinfoMap(fx.uri('mapped'));
      checkMap(map, MEM_SIZE, want);
      const D = 0;
      const H = STATE_HOLE | STATE_ZERO;
      expect(map.map((e) => [e.offset, e.length, e.type])).toEqual([
        [0, 128 * KiB, D],
        [128 * KiB, 64 * KiB, H],
        [192 * KiB, 64 * KiB, D],
        [256 * KiB, 768 * KiB, H],
        [1 * MiB, 192 * KiB, D], // includes the NO_HOLE zeroes
        [1216 * KiB, 64 * KiB, H], // zero without NO_HOLE over a whole page
        [1280 * KiB, 256 * KiB, D],
        [1536 * KiB, 640 * KiB, H], // includes the trimmed pages
        [2176 * KiB, 128 * KiB, D], // includes 100 zeroed bytes inside a data page
        [2304 * KiB, MEM_SIZE - 64 * KiB - 2304 * KiB, H],
        [MEM_SIZE - 64 * KiB, 64 * KiB, D],
      ]);
    });
  });

  describe('nbdsh with strict mode off: the server enforces the rules itself', () => {
    it('a read-only export answers EPERM to writes and EINVAL past the end, and the connection survives', async () => {
      const code = [
        'import json',
        'h.set_strict_mode(0)',
        'out = {}',
        'def attempt(key, fn):',
        '    try:',
        '        fn()',
        "        out[key] = [0, '']",
        '    except nbd.Error as e:',
        '        out[key] = [e.errnum, e.string]',
        "attempt('write', lambda: h.pwrite(b'x' * 512, 0))",
        "attempt('trim', lambda: h.trim(512, 0))",
        "attempt('zero', lambda: h.zero(512, 0))",
        "attempt('read_past_end', lambda: h.pread(512, h.get_size()))",
        "attempt('read_across_end', lambda: h.pread(512, h.get_size() - 100))",
        "out['after'] = h.pread(7, 1).hex()",
        "out['tail'] = h.pread(3, h.get_size() - 3).hex()",
        'print(json.dumps(out))',
      ].join('\n');
      const out = await nbdsh<Record<string, [number, string] | string>>(fx.uri('disk'), code);
      const EPERM = 1;
      const EINVAL = 22;
      expect(
        Object.fromEntries(['write', 'trim', 'zero', 'read_past_end', 'read_across_end'].map((k) => [k, (out[k] as [number, string])[0]])),
      ).toEqual({ write: EPERM, trim: EPERM, zero: EPERM, read_past_end: EINVAL, read_across_end: EINVAL });
      // "command failed" is libnbd's wording for an error reply from the server (its own checks
      // say e.g. "server does not support write operations").
      for (const k of ['write', 'trim', 'zero', 'read_past_end']) expect((out[k] as [number, string])[1]).toContain('command failed');
      expect(out.after).toBe('a5'.repeat(7));
      expect(out.tail).toBe('c3'.repeat(3));
    });

    it('a read-only export answers EPERM to writes that carry FUA as well (not EINVAL for the flag)', async () => {
      // The spec's answer to any write-type command on a read-only export is EPERM, whatever its
      // flags; checked() puts EROFS first for this reason, and nbdkit checks read-only before FUA.
      const out = await nbdsh<Record<string, number>>(
        fx.uri('disk'),
        [
          'import json',
          'h.set_strict_mode(0)',
          'out = {}',
          'def attempt(key, fn):',
          '    try:',
          '        fn(); out[key] = 0',
          '    except nbd.Error as e:',
          '        out[key] = e.errnum',
          "attempt('write_fua', lambda: h.pwrite(b'x' * 512, 4096, nbd.CMD_FLAG_FUA))",
          "attempt('zero_fua', lambda: h.zero(512, 4096, nbd.CMD_FLAG_FUA))",
          "attempt('trim_fua', lambda: h.trim(512, 4096, nbd.CMD_FLAG_FUA))",
          "out['after'] = h.pread(4, 0).hex()",
          'print(json.dumps(out))',
        ].join('\n'),
      );
      expect(out).toEqual({ write_fua: 1, zero_fua: 1, trim_fua: 1, after: 'a5a5a5a5' });
    });

    it('control: with strict mode on, libnbd refuses the write itself (so the test above reached the server)', async () => {
      const out = await nbdsh<{ err: [number, string] }>(
        fx.uri('disk'),
        [
          'import json',
          'try:',
          "    h.pwrite(b'x' * 512, 0); err = [0, '']",
          'except nbd.Error as e:',
          '    err = [e.errnum, e.string]',
          "print(json.dumps({'err': err}))",
        ].join('\n'),
      );
      expect(out.err[0]).toBe(1);
      expect(out.err[1]).not.toContain('command failed');
    });

    it('a writable export answers ENOSPC to a write past the end and keeps serving', async () => {
      const out = await nbdsh<{ errnum: number; msg: string; back: string }>(
        fx.unixUri('fio'),
        [
          'import json',
          'h.set_strict_mode(0)',
          'try:',
          "    h.pwrite(b'y' * 1024, h.get_size() - 512); errnum, msg = 0, ''",
          'except nbd.Error as e:',
          '    errnum, msg = e.errnum, e.string',
          "h.pwrite(b'z' * 512, h.get_size() - 512)",
          "print(json.dumps({'errnum': errnum, 'msg': msg, 'back': h.pread(512, h.get_size() - 512).decode()}))",
        ].join('\n'),
      );
      expect(out.errnum).toBe(28); // ENOSPC
      expect(out.msg).toContain('command failed');
      expect(out.back).toBe('z'.repeat(512));
      expect((await contents(fioDev, MEM_SIZE - 512, 512)).toString()).toBe('z'.repeat(512));
    });
  });

  describe('nbdcopy with 4 connections', () => {
    it('copies the raw export to a local file byte for byte', async () => {
      const out = path.join(dir, 'copy.img');
      const before = events.length;
      const r = await runOk('nbdcopy', ['-C', '4', '-T', '4', '--verbose', fx.uri('disk'), out]);
      expect(r.stderr).toMatch(/nbdcopy: connections=4 requests=\d+ threads=4/);
      expect(connectionsTo(events, 'disk', before)).toBe(4);
      const got = fs.readFileSync(out);
      expect(got.length).toBe(RAW_SIZE);
      expect(firstDifference(got, expected)).toBeUndefined();
    });

    it('copies a local file into a writable export over stale contents', async () => {
      await inbound.write(Buffer.alloc(RAW_SIZE, 0xee), 0);
      const before = events.length;
      const r = await runOk('nbdcopy', ['-C', '4', '-T', '4', '--flush', '--verbose', image, fx.unixUri('inbound')]);
      expect(r.stderr).toMatch(/nbdcopy: connections=4 requests=\d+ threads=4/);
      expect(connectionsTo(events, 'inbound', before)).toBe(4);
      expect(firstDifference(await contents(inbound), expected)).toBeUndefined();
    });

    it('spreads a large sparse copy over several connections and skips the holes', async () => {
      const out = path.join(dir, 'big.img');
      const before = events.length;
      const r = await runOk('nbdcopy', ['-C', '4', '-T', '4', '--verbose', fx.uri('big'), out], { timeoutMs: 60_000 });
      expect(r.stderr).toMatch(/nbdcopy: connections=4 requests=\d+ threads=4/);
      expect(connectionsTo(events, 'big', before)).toBe(4);
      const readers = new Set([...r.stderr.matchAll(/(src\d+): nbd_aio_pread: enter/g)].map((m) => m[1]));
      expect(readers.size, `connections that carried reads: ${[...readers].join(', ')}`).toBeGreaterThanOrEqual(2);

      // Only the data regions were read (holes were skipped through base:allocation).
      const preads = [...r.stderr.matchAll(/nbd_aio_pread: enter: buf=<buf> count=(\d+)/g)].map((m) => Number(m[1]));
      const bytesRead = preads.reduce((a, b) => a + b, 0);
      expect(bytesRead).toBeLessThanOrEqual(16 * MiB);

      const fd = fs.openSync(out, 'r');
      try {
        expect(fs.fstatSync(fd).size).toBe(BIG_SIZE);
        const chunk = Buffer.alloc(8 * MiB);
        const want = Buffer.alloc(8 * MiB);
        for (let pos = 0; pos < BIG_SIZE; pos += chunk.length) {
          fs.readSync(fd, chunk, 0, chunk.length, pos);
          want.fill(0);
          for (const off of BIG_DATA) {
            const s = Math.max(off, pos);
            const e = Math.min(off + MiB, pos + chunk.length);
            if (s < e) patternBuffer(off, MiB).copy(want, s - pos, s - off, e - off);
          }
          const d = firstDifference(chunk, want);
          expect(d === undefined ? undefined : pos + d).toBeUndefined();
        }
      } finally {
        fs.closeSync(fd);
      }
    });
  });

  describe('fio --ioengine=nbd', () => {
    async function fio(args: string[]): Promise<FioJob> {
      const json = path.join(dir, `fio-${Date.now()}.json`);
      const r = await run('fio', [...args, '--output-format=json', `--output=${json}`], { cwd: dir, timeoutMs: 60_000 });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const report = JSON.parse(fs.readFileSync(json, 'utf8')) as { jobs: FioJob[] };
      expect(report.jobs).toHaveLength(1);
      return report.jobs[0]!;
    }

    it('random 4k reads at queue depth 32 on the raw export', async () => {
      const job = await fio([
        '--name=randread', '--ioengine=nbd', `--uri=${fx.uri('disk')}`, '--rw=randread', '--bs=4k',
        '--iodepth=32', '--runtime=3', '--time_based',
      ]);
      expect(job.error).toBe(0);
      expect(job.read.io_bytes).toBeGreaterThan(0);
      expect(job.read.total_ios).toBeGreaterThan(100);
      expect(job.write.io_bytes).toBe(0);
    });

    it('random writes verified with crc32c on a memory export (Unix socket)', async () => {
      const size = 4 * MiB;
      const job = await fio([
        '--name=randwrite', '--ioengine=nbd', `--uri=${fx.unixUri('fio')}`, '--rw=randwrite', '--bs=4k',
        '--iodepth=16', `--size=${size}`, '--verify=crc32c', '--do_verify=1', '--verify_fatal=1',
      ]);
      expect(job.error).toBe(0);
      expect(job.write.io_bytes).toBe(size);
      expect(job.read.io_bytes).toBe(size); // the verify pass read everything back
      // fio's verify blocks start with a 0xacca magic: the data landed in the device.
      const first = await contents(fioDev, 0, 4096);
      expect(first.readUInt16LE(0)).toBe(0xacca);
    });
  });
});
