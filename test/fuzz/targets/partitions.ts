/**
 * Fuzz target `partitions`: readPartitionTable (src/blockdev/partitions.ts) over sparse in-memory
 * disks shaped like MBR/EBR/GPT disks: a protective or ordinary MBR with random entries, an EBR
 * chain (loops, links outside, long chains), a primary and a backup GPT header with random fields
 * and, most of the time, correct CRCs (so the parse gets past the checksums), random entries; then
 * a few random byte edits.
 *
 * Oracle: the parser returns a table whose partitions have size > 0, lie inside the disk and do
 * not overlap, or throws ReboundError ERR_PARTITION_TABLE; it never reads outside the disk, never
 * throws anything else, never hangs (5 s per input).
 */
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { readPartitionTable, type ReadableDisk } from '../../../src/blockdev/partitions.js';
import { expectCode, OracleFailure, u32, type FuzzTarget } from '../lib.js';

interface Input {
  size: number;
  sectors: Array<[number, Uint8Array]>;
}

class SparseDisk implements ReadableDisk {
  readonly size: number;
  readonly #sectors = new Map<number, Uint8Array>();
  reads = 0;
  constructor(input: Input) {
    this.size = input.size;
    for (const [at, bytes] of input.sectors) this.#sectors.set(at, bytes);
  }
  async read(dst: Uint8Array, offset: number): Promise<void> {
    this.reads++;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + dst.length > this.size) {
      throw new OracleFailure(`read of ${dst.length} bytes at ${offset} outside the disk (${this.size} bytes)`);
    }
    dst.fill(0);
    for (const [at, bytes] of this.#sectors) {
      const from = Math.max(at, offset);
      const to = Math.min(at + bytes.length, offset + dst.length);
      if (from < to) dst.set(bytes.subarray(from - at, to - at), from - offset);
    }
  }
}

const smallLba = fc.oneof({ weight: 4, arbitrary: fc.nat({ max: 4096 }) }, { weight: 1, arbitrary: u32() });
const mbrType = fc.oneof(fc.constantFrom(0, 0x83, 0x07, 0x05, 0x0f, 0x85, 0xee), fc.integer({ min: 0, max: 255 }));
const mbrEntry = fc.record({ flag: fc.oneof(fc.constantFrom(0, 0x80), fc.integer({ min: 0, max: 255 })), type: mbrType, start: smallLba, count: smallLba });

function mbrSector(entries: Array<{ flag: number; type: number; start: number; count: number }>, signature: boolean): Uint8Array {
  const b = Buffer.alloc(512);
  entries.slice(0, 4).forEach((e, i) => {
    const at = 446 + i * 16;
    b[at] = e.flag;
    b[at + 4] = e.type;
    b.writeUInt32LE(e.start >>> 0, at + 8);
    b.writeUInt32LE(e.count >>> 0, at + 12);
  });
  if (signature) (b[510] = 0x55), (b[511] = 0xaa);
  return b;
}

const u64 = fc.oneof({ weight: 5, arbitrary: fc.nat({ max: 8192 }).map(BigInt) }, { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) });

const gptSpec = fc.record({
  ss: fc.constantFrom(512, 4096),
  headerSize: fc.oneof(fc.constant(92), u32()),
  goodCrc: fc.boolean(),
  goodEntriesCrc: fc.boolean(),
  firstUsable: u64,
  lastUsable: u64,
  entriesLba: fc.oneof(fc.constant(2n), u64),
  entryCount: fc.oneof(fc.constantFrom(0, 1, 4, 128), u32()),
  entrySize: fc.oneof(fc.constant(128), u32()),
  entries: fc.array(fc.record({ type: fc.uint8Array({ minLength: 16, maxLength: 16 }), first: u64, last: u64, name: fc.string({ maxLength: 36 }) }), { maxLength: 6 }),
  backup: fc.boolean(),
});

type GptSpec = typeof gptSpec extends fc.Arbitrary<infer T> ? T : never;

function gptHeader(g: GptSpec, lba: bigint): Uint8Array {
  const b = Buffer.alloc(g.ss);
  b.write('EFI PART', 0, 'latin1');
  b.writeUInt32LE(0x10000, 8);
  b.writeUInt32LE(g.headerSize >>> 0, 12);
  b.writeBigUInt64LE(lba, 24);
  b.writeBigUInt64LE(g.firstUsable, 40);
  b.writeBigUInt64LE(g.lastUsable, 48);
  b.writeBigUInt64LE(g.entriesLba, 72);
  b.writeUInt32LE(g.entryCount >>> 0, 80);
  b.writeUInt32LE(g.entrySize >>> 0, 84);
  const arr = gptEntries(g);
  b.writeUInt32LE(g.goodEntriesCrc ? crc32(arr.subarray(0, Math.min(arr.length, g.entryCount * g.entrySize))) : 0x1234, 88);
  const hs = Math.min(g.headerSize, g.ss);
  if (g.goodCrc) b.writeUInt32LE(crc32(b.subarray(0, hs)), 16);
  return b;
}

function gptEntries(g: GptSpec): Buffer {
  const size = g.entrySize >= 128 && g.entrySize <= 4096 ? g.entrySize : 128;
  const n = Math.min(g.entryCount, 256);
  const b = Buffer.alloc(n * size);
  g.entries.slice(0, n).forEach((e, i) => {
    const at = i * size;
    b.set(e.type, at);
    b.writeBigUInt64LE(e.first, at + 32);
    b.writeBigUInt64LE(e.last, at + 40);
    b.write(e.name, at + 56, 72, 'utf16le');
  });
  return b;
}

const input: fc.Arbitrary<Input> = fc
  .record({
    size: fc.oneof(fc.nat({ max: 8192 }).map((s) => s * 512), fc.nat({ max: 1 << 24 }), fc.constantFrom(0, 511, 512, 1024, 4096, 8192, 2 ** 40)),
    mbr: fc.array(mbrEntry, { minLength: 4, maxLength: 4 }),
    signed: fc.nat({ max: 9 }), // 0: no 0x55AA (one input in ten)
    ebrs: fc.array(fc.record({ lba: smallLba, entries: fc.array(mbrEntry, { minLength: 2, maxLength: 2 }) }), { maxLength: 8 }),
    gpt: fc.option(gptSpec, { freq: 2 }),
    edits: fc.array(fc.record({ sector: fc.nat({ max: 40 }), at: fc.nat({ max: 4095 }), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 3 }),
  })
  .map(({ size, mbr, signed, ebrs, gpt, edits }) => {
    const sectors = new Map<number, Uint8Array>();
    sectors.set(0, mbrSector(mbr, signed > 0));
    for (const e of ebrs) sectors.set(e.lba * 512, mbrSector(e.entries, true));
    if (gpt) {
      sectors.set(gpt.ss, gptHeader(gpt, 1n));
      const lba = Number(gpt.entriesLba);
      if (Number.isSafeInteger(lba * gpt.ss)) sectors.set(lba * gpt.ss, gptEntries(gpt));
      const last = Math.floor(size / gpt.ss) - 1;
      if (gpt.backup && last > 1) sectors.set(last * gpt.ss, gptHeader(gpt, BigInt(last)));
    }
    const keys = [...sectors.keys()];
    for (const e of edits) {
      const s = sectors.get(keys[e.sector % keys.length]!)!;
      if (s.length) s[e.at % s.length] = e.value;
    }
    return { size, sectors: [...sectors.entries()].filter(([at]) => at < size) };
  });

export function partitionsTarget(): FuzzTarget<Input> {
  return {
    name: 'partitions',
    oracle: 'readPartitionTable returns a table of non-empty, non-overlapping partitions inside the disk, or throws ERR_PARTITION_TABLE; it reads only inside the disk and never hangs',
    arbitrary: input,
    check: async (inp) => {
      const disk = new SparseDisk(inp);
      let t;
      try {
        t = await readPartitionTable(disk, 'fuzz');
      } catch (err) {
        if (err instanceof OracleFailure) throw err;
        return expectCode(err, ['ERR_PARTITION_TABLE'], 'readPartitionTable');
      }
      let end = -1;
      for (const p of [...t.partitions].sort((a, b) => a.offset - b.offset)) {
        if (!(p.size > 0) || p.offset < 0 || p.offset + p.size > inp.size || !Number.isSafeInteger(p.offset + p.size)) {
          throw new OracleFailure(`partition ${p.number} (${p.offset}+${p.size}) outside the disk (${inp.size})`);
        }
        if (p.offset < end) throw new OracleFailure(`partition ${p.number} overlaps its predecessor`);
        end = p.offset + p.size;
      }
    },
  };
}
