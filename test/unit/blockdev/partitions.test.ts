/** The partition table parser: MBR with logical partitions, GPT (512 and 4096-byte sectors), and malformed tables. */
import { describe, expect, it } from 'vitest';
import { readPartitionTable, MAX_LOGICAL, type PartitionTable } from '../../../src/blockdev/partitions.js';
import { isReboundError } from '../../../src/errors.js';
import { bufferDisk, buildGpt, buildMbr, fixGptCrcs, LINUX_FS_GUID, SECTOR, writeMbrEntry } from '../../helpers/fuse-disks.js';

const MiB = 1024 * 1024;

async function expectTableError(buf: Buffer, match: RegExp): Promise<void> {
  const err = await readPartitionTable(bufferDisk(buf), 'test-disk').then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isReboundError(err), String(err)).toBe(true);
  expect((err as { code: string }).code).toBe('ERR_PARTITION_TABLE');
  expect((err as Error).message).toMatch(/^test-disk: malformed partition table: /);
  expect((err as Error).message).toMatch(match);
}

/** 2 primaries, an extended partition in slot 3 with two logicals: Linux numbers 1, 2, 5, 6. */
function mbrWithLogicals(size = 16 * MiB): Buffer {
  return buildMbr(size, [{ type: 0x83, start: 2048, count: 4096, boot: true }, { type: 0x0c, start: 6144, count: 2048 }], {
    slot: 2,
    start: 8192,
    count: 16384,
    logicals: [
      { ebr: 8192, start: 2048, count: 2048 },
      { ebr: 12288, start: 2048, count: 4096, type: 0x82 },
    ],
  });
}

describe('readPartitionTable: MBR', () => {
  it('lists primary and logical partitions with Linux numbering; the extended container is not a partition', async () => {
    const t = await readPartitionTable(bufferDisk(mbrWithLogicals()));
    expect(t.scheme).toBe('mbr');
    expect(t.diskId).toBe('deadbeef');
    expect(t.partitions.map((p) => [p.number, p.kind, p.offset / SECTOR, p.size / SECTOR, p.type])).toEqual([
      [1, 'primary', 2048, 4096, '0x83'],
      [2, 'primary', 6144, 2048, '0x0c'],
      [5, 'logical', 10240, 2048, '0x83'],
      [6, 'logical', 14336, 4096, '0x82'],
    ]);
    expect(t.partitions[0]!.bootable).toBe(true);
  });

  it('keeps slot numbers when a primary slot is empty', async () => {
    const disk = Buffer.alloc(4 * MiB);
    writeMbrEntry(disk, 0, 2, { type: 0x83, start: 2048, count: 2048 });
    const t = await readPartitionTable(bufferDisk(disk));
    expect(t.partitions.map((p) => p.number)).toEqual([3]);
  });

  it('a disk without a table is scheme none, not an error', async () => {
    expect((await readPartitionTable(bufferDisk(Buffer.alloc(1 * MiB)))).scheme).toBe('none');
    expect((await readPartitionTable(bufferDisk(Buffer.alloc(100)))).scheme).toBe('none');
    // A FAT boot sector has 0x55AA but its "boot flags" are code bytes.
    const fat = Buffer.alloc(1 * MiB);
    fat.fill(0x90, 0, 510);
    fat[510] = 0x55;
    fat[511] = 0xaa;
    const t = await readPartitionTable(bufferDisk(fat));
    expect(t).toEqual({ scheme: 'none', sectorSize: 512, partitions: [], warnings: [] } satisfies PartitionTable);
  });

  it('rejects a partition past the end of the disk without reading there', async () => {
    const disk = Buffer.alloc(4 * MiB);
    writeMbrEntry(disk, 0, 0, { type: 0x83, start: 2048, count: 1_000_000 });
    await expectTableError(disk, /partition 1 .* extends past the end of the disk/);
  });

  it('rejects overlapping partitions, a partition at sector 0 and two extended partitions', async () => {
    const a = Buffer.alloc(4 * MiB);
    writeMbrEntry(a, 0, 0, { type: 0x83, start: 2048, count: 2048 });
    writeMbrEntry(a, 0, 1, { type: 0x83, start: 4000, count: 100 });
    await expectTableError(a, /partitions 1 and 2 overlap/);
    const b = Buffer.alloc(4 * MiB);
    writeMbrEntry(b, 0, 0, { type: 0x83, start: 0, count: 10 });
    await expectTableError(b, /starts at sector 0/);
    const c = Buffer.alloc(4 * MiB);
    writeMbrEntry(c, 0, 0, { type: 0x05, start: 2048, count: 100 });
    writeMbrEntry(c, 0, 1, { type: 0x0f, start: 4096, count: 100 });
    await expectTableError(c, /more than one extended partition/);
  });

  it('rejects a looping EBR chain, an EBR outside the extended partition and a logical that overflows it', async () => {
    const loop = mbrWithLogicals();
    writeMbrEntry(loop, 12288, 1, { type: 0x05, start: 0, count: 100 }); // back to the first EBR
    await expectTableError(loop, /EBR chain loops/);
    const outside = mbrWithLogicals();
    writeMbrEntry(outside, 8192, 1, { type: 0x05, start: 999_999, count: 100 });
    await expectTableError(outside, /EBR at sector .* outside the extended partition/);
    const big = mbrWithLogicals();
    writeMbrEntry(big, 12288, 0, { type: 0x83, start: 2048, count: 99_999 });
    await expectTableError(big, /logical partition 6 .* extends past the extended partition/);
    const unsigned = mbrWithLogicals();
    unsigned[12288 * SECTOR + 510] = 0;
    await expectTableError(unsigned, /no 0x55AA signature/);
  });

  it(`stops a chain of more than ${MAX_LOGICAL} logical partitions`, async () => {
    const n = MAX_LOGICAL + 2;
    const logicals = Array.from({ length: n }, (_, i) => ({ ebr: 2048 + i * 8, start: 1, count: 7 }));
    const disk = buildMbr(4 * MiB, [], { slot: 0, start: 2048, count: n * 8, logicals });
    await expectTableError(disk, /more than 128 logical partitions/);
  });
});

describe('readPartitionTable: GPT', () => {
  it('lists GPT partitions with names, type and unique GUIDs', async () => {
    const disk = buildGpt(16 * MiB, [
      { first: 2048, last: 10239, name: 'root' },
      { first: 10240, last: 30000, name: 'data', type: 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7' },
    ]);
    const t = await readPartitionTable(bufferDisk(disk));
    expect(t.scheme).toBe('gpt');
    expect(t.sectorSize).toBe(512);
    expect(t.diskId).toBe('12345678-9abc-4def-8123-456789abcdef');
    expect(t.warnings).toEqual([]);
    expect(t.partitions).toEqual([
      { number: 1, kind: 'gpt', offset: 2048 * 512, size: 8192 * 512, type: LINUX_FS_GUID, uuid: '00000000-0000-4000-8000-000000000001', name: 'root' },
      { number: 2, kind: 'gpt', offset: 10240 * 512, size: 19761 * 512, type: 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7', uuid: '00000000-0000-4000-8000-000000000002', name: 'data' },
    ]);
  });

  it('finds a GPT on a disk with 4096-byte sectors', async () => {
    const disk = buildGpt(16 * MiB, [{ first: 256, last: 1279 }], { ss: 4096 });
    const t = await readPartitionTable(bufferDisk(disk));
    expect(t.sectorSize).toBe(4096);
    expect(t.partitions[0]).toMatchObject({ offset: 256 * 4096, size: 1024 * 4096 });
  });

  it('uses the backup GPT when the primary header is damaged, with a warning', async () => {
    const disk = buildGpt(8 * MiB, [{ first: 2048, last: 4095 }]);
    disk[512 + 40] ^= 0xff; // primary header CRC no longer matches
    const t = await readPartitionTable(bufferDisk(disk));
    expect(t.partitions).toHaveLength(1);
    expect(t.warnings.join()).toMatch(/primary GPT unusable .*CRC32 mismatch.*using the backup GPT/);
  });

  it('rejects damaged headers and entries when the backup is damaged too', async () => {
    const sectors = (8 * MiB) / 512;
    const crc = buildGpt(8 * MiB, [{ first: 2048, last: 4095 }]);
    crc[512 + 40] ^= 0xff;
    crc[(sectors - 1) * 512 + 40] ^= 0xff;
    await expectTableError(crc, /primary GPT header CRC32 mismatch/);
    const entries = buildGpt(8 * MiB, [{ first: 2048, last: 4095 }]);
    entries[2 * 512 + 33] ^= 1; // entry array CRC
    entries[(sectors - 33) * 512 + 33] ^= 1;
    await expectTableError(entries, /entry array CRC32 mismatch/);
  });

  it('rejects entries past the end or outside the usable range, even with valid CRCs', async () => {
    const sectors = (8 * MiB) / 512;
    const past = buildGpt(8 * MiB, [{ first: 2048, last: sectors + 100 }]);
    await expectTableError(past, /partition 1 \(LBA 2048\.\.\d+\) lies outside the usable range/);
    const reversed = buildGpt(8 * MiB, [{ first: 4000, last: 3000 }]);
    await expectTableError(reversed, /ends \(LBA 3000\) before it starts/);
    const overlap = buildGpt(8 * MiB, [{ first: 2048, last: 4095 }, { first: 4000, last: 5000 }]);
    await expectTableError(overlap, /partitions 1 and 2 overlap/);
  });

  it('rejects an entry array that points past the end of the disk without reading there', async () => {
    const disk = buildGpt(8 * MiB, [{ first: 2048, last: 4095 }]);
    for (const lba of [1, (8 * MiB) / 512 - 1]) {
      disk.writeBigUInt64LE(1n << 40n, lba * 512 + 72);
      fixGptCrcs(disk, lba);
    }
    await expectTableError(disk, /GPT entry array at byte \d+ .* lies past the end of the disk/);
  });

  it('rejects a protective MBR without a GPT header', async () => {
    const disk = Buffer.alloc(4 * MiB);
    writeMbrEntry(disk, 0, 0, { type: 0xee, start: 1, count: 8191 });
    await expectTableError(disk, /protective MBR .* but no GPT header/);
  });
});

/** xorshift32: the same seed gives the same mutations on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>>= 0);
  };
}

describe('readPartitionTable: seeded fuzzing', () => {
  const size = 1 * MiB;
  const sectors = size / 512;
  const mbr = buildMbr(size, [{ type: 0x83, start: 64, count: 256 }, { type: 0x07, start: 320, count: 128 }], {
    slot: 2,
    start: 512,
    count: 1024,
    logicals: [
      { ebr: 512, start: 32, count: 256 },
      { ebr: 900, start: 32, count: 300 },
    ],
  });
  const gpt = buildGpt(size, [{ first: 64, last: 1000 }, { first: 1001, last: 1500 }]);
  const bases: Array<{ name: string; disk: Buffer; regions: Array<[number, number]>; fixCrc: boolean }> = [
    { name: 'mbr+ebr', disk: mbr, regions: [[440, 512], [512 * 512 + 446, 512 * 512 + 512], [900 * 512 + 446, 900 * 512 + 512]], fixCrc: false },
    { name: 'gpt (raw bytes)', disk: gpt, regions: [[446, 512], [512, 604], [1024, 1024 + 256]], fixCrc: false },
    { name: 'gpt (CRCs fixed)', disk: gpt, regions: [[512, 604], [1024, 1024 + 256]], fixCrc: true },
  ];

  it('the fuzz bases are valid tables', async () => {
    expect((await readPartitionTable(bufferDisk(mbr))).partitions.map((p) => p.number)).toEqual([1, 2, 5, 6]);
    expect((await readPartitionTable(bufferDisk(gpt))).partitions.map((p) => p.number)).toEqual([1, 2]);
  });

  for (const base of bases) {
    it(`${base.name}: 1500 mutated tables give a sane table or ERR_PARTITION_TABLE, never a crash or an out-of-bounds read`, async () => {
      const next = rng(0x5eed + base.name.length);
      const outcomes = { ok: 0, rejected: 0 };
      for (let i = 0; i < 1500; i++) {
        const disk = Buffer.from(base.disk);
        const flips = 1 + (next() % 6);
        for (let f = 0; f < flips; f++) {
          const [a, b] = base.regions[next() % base.regions.length]!;
          disk[a + (next() % (b - a))] = next() & 0xff;
        }
        if (base.fixCrc) {
          fixGptCrcs(disk, 1);
          disk.fill(0, (sectors - 1) * 512); // no backup to fall back on
        }
        const d = bufferDisk(disk);
        try {
          const t = await readPartitionTable(d, 'fuzz');
          outcomes.ok++;
          for (const p of t.partitions) {
            expect(p.size).toBeGreaterThan(0);
            expect(p.offset).toBeGreaterThan(0);
            expect(p.offset + p.size).toBeLessThanOrEqual(disk.length);
          }
        } catch (err) {
          if (!isReboundError(err) || err.code !== 'ERR_PARTITION_TABLE') throw new Error(`iteration ${i}: unexpected ${String(err)}`);
          outcomes.rejected++;
        }
        expect(d.reads).toBeLessThan(MAX_LOGICAL + 10);
      }
      // Both outcomes occur: the fuzzer reaches the checks and does not only break signatures.
      expect(outcomes.ok).toBeGreaterThan(10);
      expect(outcomes.rejected).toBeGreaterThan(10);
    });
  }
});
