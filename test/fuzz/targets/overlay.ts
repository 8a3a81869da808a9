/**
 * Fuzz target `overlay`: the copy-on-write overlay and its allocation map at work
 * (blockdev/layers/cow/cow-overlay.ts over block-map.ts), not only the page decoder `formats`
 * covers. Each input opens a fresh overlay (block size 512 B or 4 KiB) over a patterned memory
 * base whose size is not a multiple of the block size, and runs a sequence of operations against
 * a model of the disk: writes of any offset and length (aligned or not, past the end), TRIM,
 * WRITE_ZEROES (with or without NO_HOLE), reads, flushes, close and reopen, and damage to the map
 * file on disk (bytes overwritten anywhere, state 3 entries, bits past the device's end, the file
 * truncated or extended) followed by a reopen.
 *
 * Operations go through checked() (blockdev/checked.ts), as every front end calls devices.
 *
 * Oracle: every read returns the model's bytes; an operation past the end fails with a BlockError
 * and changes nothing; nothing reaches checked()'s unexpected-error path (a stray exception); the stats stay within the device (DATA + ZERO blocks <= blocks). After
 * damage the overlay opens (or refuses with ERR_OVERLAY_CORRUPT), and every block then reads as
 * the base's bytes, zeroes or the data file's bytes for that block — never anything else, and
 * reads never fail; the model takes what it reads and the sequence goes on.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { checked, type CheckedDevice } from '../../../src/blockdev/checked.js';
import { CowOverlay } from '../../../src/blockdev/layers/cow/cow-overlay.js';
import { DATA_FILE, MAP_FILE } from '../../../src/blockdev/layers/cow/format.js';
import { isBlockError } from '../../../src/errors.js';
import { patternBuffer } from '../../helpers/images.js';
import { expectCode, OracleFailure, type FuzzTarget } from '../lib.js';

/** 77 KiB + 512 B: not a multiple of 4 KiB, so the last block is partial. */
const SIZE = 77 * 1024 + 512;

type Op =
  | { op: 'write'; offset: number; length: number; byte: number }
  | { op: 'trim' | 'zero'; offset: number; length: number; noHole: boolean }
  | { op: 'read'; offset: number; length: number }
  | { op: 'flush' | 'reopen' }
  | { op: 'damage'; edits: Array<{ at: number; value: number }>; resize: number | null };

interface Input {
  blockSize: number;
  ops: Op[];
}

interface Ctx {
  root: string;
  base: Buffer;
}

const range = fc.oneof(
  { weight: 4, arbitrary: fc.record({ offset: fc.nat({ max: SIZE }), length: fc.integer({ min: 1, max: 20_000 }) }) },
  // Edges: the last blocks, lengths that cross the end.
  { weight: 1, arbitrary: fc.record({ offset: fc.integer({ min: SIZE - 9000, max: SIZE + 10 }), length: fc.integer({ min: 1, max: 10_000 }) }) },
);

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 255 })).map(([r, byte]) => ({ op: 'write' as const, ...r, byte })) },
  { weight: 2, arbitrary: fc.tuple(range, fc.constantFrom('trim' as const, 'zero' as const), fc.boolean()).map(([r, o, noHole]) => ({ op: o, ...r, noHole })) },
  { weight: 3, arbitrary: range.map((r) => ({ op: 'read' as const, ...r })) },
  { weight: 1, arbitrary: fc.constantFrom({ op: 'flush' as const }, { op: 'reopen' as const }) },
  {
    weight: 1,
    arbitrary: fc
      .record({
        edits: fc.array(fc.record({ at: fc.nat({ max: 8192 }), value: fc.oneof(fc.constant(0xff), fc.constant(0xaa), fc.integer({ min: 0, max: 255 })) }), { maxLength: 6 }),
        resize: fc.option(fc.nat({ max: 12_288 }), { freq: 4 }),
      })
      .map((d) => ({ op: 'damage' as const, ...d })),
  },
);

const input: fc.Arbitrary<Input> = fc.record({ blockSize: fc.constantFrom(512, 4096), ops: fc.array(op, { minLength: 1, maxLength: 10 }) });

async function checkRead(ov: CheckedDevice, model: Buffer, offset: number, length: number, where: string): Promise<void> {
  const buf = Buffer.alloc(length);
  try {
    await ov.read(buf, offset);
  } catch (err) {
    if (offset + length > SIZE && isBlockError(err)) return;
    throw new OracleFailure(`${where}: read ${offset}+${length} failed: ${String(err)}`);
  }
  if (offset + length > SIZE) throw new OracleFailure(`${where}: read ${offset}+${length} past the end succeeded`);
  if (!buf.equals(model.subarray(offset, offset + length))) throw new OracleFailure(`${where}: read ${offset}+${length} differs from the model`);
}

/** After damage: each block reads as base, zeroes or the data file's block; the model becomes what it reads. */
async function resync(ov: CheckedDevice, dir: string, base: Buffer, blockSize: number, model: Buffer): Promise<void> {
  const now = Buffer.alloc(SIZE);
  await ov.read(now, 0);
  const data = fs.readFileSync(path.join(dir, DATA_FILE));
  for (let off = 0; off < SIZE; off += blockSize) {
    const end = Math.min(SIZE, off + blockSize);
    const got = now.subarray(off, end);
    const fromData = Buffer.alloc(end - off);
    if (off < data.length) data.copy(fromData, 0, off, Math.min(end, data.length));
    if (!got.equals(base.subarray(off, end)) && !got.equals(Buffer.alloc(end - off)) && !got.equals(fromData)) {
      throw new OracleFailure(`after map damage, block at ${off} reads as neither base, zeroes nor the data file`);
    }
  }
  now.copy(model);
}

function checkStats(ov: CowOverlay, blockSize: number, where: string): void {
  const s = ov.stats();
  const blocks = Math.ceil(SIZE / blockSize);
  if (s.dataBlocks < 0 || s.zeroBlocks < 0 || s.dataBlocks + s.zeroBlocks > blocks) {
    throw new OracleFailure(`${where}: stats out of bounds: ${s.dataBlocks} data + ${s.zeroBlocks} zero blocks of ${blocks}`);
  }
}

async function runOne({ blockSize, ops }: Input, ctx: Ctx): Promise<void> {
  // One overlay directory per block size, emptied before each input (creating one costs more
  // than most inputs): an overlay whose map and data files are empty is a fresh overlay.
  const dir = path.join(ctx.root, `bs${blockSize}`);
  if (fs.existsSync(path.join(dir, MAP_FILE))) {
    fs.truncateSync(path.join(dir, MAP_FILE), 0);
    fs.truncateSync(path.join(dir, DATA_FILE), 0);
  }
  // The overlay closes its base with it: each opening gets a fresh copy of the (never written) base.
  const open = async (): Promise<CowOverlay> => {
    const base = new MemoryDevice(SIZE);
    await base.write(ctx.base, 0);
    return CowOverlay.open(base, { dir, baseId: 'fuzz-base', blockSize });
  };
  const model = Buffer.from(ctx.base);
  let ov: CowOverlay | undefined = await open();
  const unexpected: string[] = [];
  const dev = (): CheckedDevice =>
    checked(ov!, { onUnexpectedError: (err, op) => unexpected.push(`${op}: ${String(err)}`), release: async () => undefined });
  let d = dev();
  try {
    for (const [i, o] of ops.entries()) {
      const where = `op ${i} (${o.op})`;
      if (!ov) break;
      switch (o.op) {
        case 'write': {
          const src = Buffer.alloc(o.length, o.byte);
          try {
            await d.write(src, o.offset);
            if (o.offset + o.length > SIZE) throw new OracleFailure(`${where}: write past the end succeeded`);
            src.copy(model, o.offset);
          } catch (err) {
            if (err instanceof OracleFailure) throw err;
            if (!(o.offset + o.length > SIZE && isBlockError(err))) throw new OracleFailure(`${where}: ${String(err)}`);
          }
          break;
        }
        case 'trim':
        case 'zero': {
          try {
            if (o.op === 'trim') await d.trim(o.offset, o.length);
            else await d.zero(o.offset, o.length, { noHole: o.noHole });
            if (o.offset + o.length > SIZE) throw new OracleFailure(`${where}: past the end succeeded`);
            model.fill(0, o.offset, o.offset + o.length);
          } catch (err) {
            if (err instanceof OracleFailure) throw err;
            if (!(o.offset + o.length > SIZE && isBlockError(err))) throw new OracleFailure(`${where}: ${String(err)}`);
          }
          break;
        }
        case 'read':
          await checkRead(d, model, o.offset, o.length, where);
          break;
        case 'flush':
          await d.flush();
          break;
        case 'reopen':
          await ov.close();
          ov = undefined;
          ov = await open();
          d = dev();
          await checkRead(d, model, 0, SIZE, `${where}: whole disk after reopen`);
          break;
        case 'damage': {
          await ov.close();
          ov = undefined;
          const mapFile = path.join(dir, MAP_FILE);
          const fd = fs.openSync(mapFile, 'r+');
          try {
            for (const e of o.edits) fs.writeSync(fd, Buffer.from([e.value]), 0, 1, e.at);
            if (o.resize !== null) fs.ftruncateSync(fd, o.resize);
          } finally {
            fs.closeSync(fd);
          }
          try {
            ov = await open();
          } catch (err) {
            expectCode(err, ['ERR_OVERLAY_CORRUPT'], `${where}: reopen after map damage`);
            fs.rmSync(dir, { recursive: true, force: true });
            return;
          }
          d = dev();
          await resync(d, dir, ctx.base, blockSize, model);
          break;
        }
      }
      if (unexpected.length) throw new OracleFailure(`${where}: unexpected error ${unexpected[0]}`);
      if (ov) checkStats(ov, blockSize, where);
    }
    if (ov) await checkRead(d, model, 0, SIZE, 'whole disk at the end');
  } finally {
    await ov?.close();
  }
}

export function overlayTarget(): FuzzTarget<Input, Ctx> {
  return {
    name: 'overlay',
    oracle: 'reads match a model of the disk through writes, TRIM, zeroes, flushes and reopens; after map-file damage the overlay opens (or ERR_OVERLAY_CORRUPT) and every block reads as base, zeroes or the data file',
    arbitrary: input,
    setup: async () => {
      // tmpfs when there is one: the overlay syncs its files, which costs nothing there.
      const parent = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
      return { root: fs.mkdtempSync(path.join(parent, 'rebound-fuzz-overlay-')), base: patternBuffer(0, SIZE) };
    },
    check: (i, ctx) => runOne(i, ctx),
    teardown: async (ctx) => {
      fs.rmSync(ctx.root, { recursive: true, force: true });
    },
  };
}
