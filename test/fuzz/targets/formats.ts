/**
 * Fuzz target `formats`: the repository's fixed index, chunk header and point manifest
 * (src/repo/format.ts, manifest.ts), the overlay header (cow/format.ts readHeader, from a file)
 * and the overlay map (cow/block-map.ts loadPage). Inputs are valid encodings with random fields,
 * bit flips and truncations, and arbitrary JSON values.
 *
 * Oracle: a decoder returns a value that satisfies its own invariants, or throws a ReboundError
 * with the documented code (ERR_REPO_CORRUPT, ERR_CHUNK_CORRUPT, ERR_OVERLAY_CORRUPT,
 * ERR_OVERLAY_VERSION); never another exception, never a hang.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { CHUNK_HEADER_BYTES, DIGEST_BYTES, FixedIndex, INDEX_HEADER_BYTES, decodeChunkHeader, encodeChunkHeader } from '../../../src/repo/format.js';
import { parseManifest, POINT_FORMAT, POINT_VERSION } from '../../../src/repo/manifest.js';
import { readHeader, HEADER_FILE, FORMAT_NAME, FORMAT_VERSION } from '../../../src/blockdev/layers/cow/format.js';
import { BlockMap, BLOCKS_PER_PAGE, PAGE_BYTES } from '../../../src/blockdev/layers/cow/block-map.js';
import { expectCode, OracleFailure, rarely, u32, type FuzzTarget } from '../lib.js';

type Input =
  | { kind: 'index'; bytes: Buffer }
  | { kind: 'chunk'; bytes: Buffer }
  | { kind: 'manifest'; text: string }
  | { kind: 'overlay'; text: string }
  | { kind: 'map'; blocks: number; page: number; bytes: Uint8Array };

/** Flips bits, overwrites bytes and truncates or extends. */
function mutate(base: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  const edit = fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) });
  return fc
    .tuple(base, fc.array(edit, { maxLength: 4 }), rarely(fc.nat({ max: 4096 }), 4), fc.uint8Array({ maxLength: 64 }))
    .map(([b, edits, cut, tail]) => {
      let out = Buffer.from(b);
      for (const e of edits) if (out.length) out[e.at % out.length] = e.value;
      if (cut !== null) out = out.subarray(0, cut % (out.length + 1));
      else if (tail.length && edits.length === 0) out = Buffer.concat([out, tail]);
      return out;
    });
}

const indexBytes = fc
  .record({
    size: fc.oneof(fc.nat({ max: 1 << 20 }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
    chunkSize: fc.oneof(fc.constantFrom(0, 1, 4096, 65536, 4 << 20), u32()),
    count: rarely(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), 4),
    version: fc.oneof(fc.constant(1), u32()),
    digests: fc.nat({ max: 40 }),
  })
  .map(({ size, chunkSize, count, version, digests }) => {
    const b = Buffer.alloc(INDEX_HEADER_BYTES + digests * DIGEST_BYTES, 7);
    b.write('RBFIDX01', 0, 'latin1');
    b.writeUInt32BE(version, 8);
    b.writeUInt32BE(chunkSize, 12);
    const s = BigInt(size);
    b.writeBigUInt64BE(s, 16);
    b.writeBigUInt64BE(count ?? (chunkSize > 0 && s < 1n << 53n ? BigInt(Math.ceil(Number(s) / chunkSize)) : 0n), 24);
    return b;
  });

const validIndex = fc.tuple(fc.nat({ max: 1 << 22 }), fc.constantFrom(4096, 65536, 1 << 20)).map(([size, cs]) => new FixedIndex(size, cs).encode());

const manifestObject = fc.record(
  {
    format: fc.oneof(fc.constant(POINT_FORMAT), fc.string()),
    version: fc.oneof(fc.constant(POINT_VERSION), fc.jsonValue()),
    vm: fc.jsonValue(),
    id: fc.jsonValue(),
    disks: fc.jsonValue(),
  },
  { requiredKeys: [] },
);

const overlayObject = fc.record(
  {
    format: fc.oneof(fc.constant(FORMAT_NAME), fc.string()),
    version: fc.oneof(fc.constant(FORMAT_VERSION), fc.jsonValue()),
    size: fc.oneof(fc.nat(), fc.double(), fc.jsonValue()),
    blockSize: fc.oneof(fc.constantFrom(512, 4096, 65536, 1 << 20, 1 << 21, 3, 0, -4096), fc.jsonValue()),
    createdAt: fc.jsonValue(),
    base: fc.oneof(fc.record({ size: fc.jsonValue(), id: fc.oneof(fc.string(), fc.jsonValue()) }), fc.jsonValue()),
  },
  { requiredKeys: [] },
);

/** A JSON text: an object of the right shape with random fields, any JSON value, or broken text. */
const jsonText = (shape: fc.Arbitrary<unknown>): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 4, arbitrary: shape.map((o) => JSON.stringify(o)) },
    { weight: 2, arbitrary: fc.jsonValue().map((v) => JSON.stringify(v)) },
    { weight: 1, arbitrary: mutate(shape.map((o) => Buffer.from(JSON.stringify(o)))).map((b) => b.toString('utf8')) },
  );

export function formatsTarget(): FuzzTarget<Input, { dir: string }> {
  const text = (shape: fc.Arbitrary<unknown>): fc.Arbitrary<string> => jsonText(shape);
  return {
    name: 'formats',
    oracle: 'index/chunk/manifest/overlay-header decoders return a consistent value or throw their documented ReboundError code; the block map stays within its bounds',
    arbitrary: fc.oneof(
      fc.oneof(mutate(indexBytes), mutate(validIndex)).map((bytes) => ({ kind: 'index' as const, bytes })),
      mutate(fc.tuple(fc.integer({ min: 0, max: 255 }), u32()).map(([c, n]) => encodeChunkHeader(c, n))).map((bytes) => ({ kind: 'chunk' as const, bytes })),
      text(manifestObject).map((t) => ({ kind: 'manifest' as const, text: t })),
      text(overlayObject).map((t) => ({ kind: 'overlay' as const, text: t })),
      fc
        .record({ blocks: fc.nat({ max: 3 * BLOCKS_PER_PAGE }), page: fc.nat({ max: 3 }), bytes: fc.uint8Array({ minLength: 0, maxLength: PAGE_BYTES + 8 }) })
        .map((r) => ({ kind: 'map' as const, ...r })),
    ),
    setup: async () => ({ dir: fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-fuzz-formats-')) }),
    teardown: async ({ dir }) => fs.rmSync(dir, { recursive: true, force: true }),
    check: async (input, { dir }) => {
      switch (input.kind) {
        case 'index': {
          let ix: FixedIndex;
          try {
            ix = FixedIndex.decode(input.bytes, 'fuzz');
          } catch (err) {
            return expectCode(err, ['ERR_REPO_CORRUPT'], 'FixedIndex.decode');
          }
          if (ix.count !== Math.ceil(ix.size / ix.chunkSize) || ix.digests.length !== ix.count * DIGEST_BYTES || !Number.isSafeInteger(ix.size)) {
            throw new OracleFailure(`FixedIndex.decode accepted an inconsistent index: size ${ix.size} chunkSize ${ix.chunkSize} count ${ix.count}`);
          }
          if (ix.count > 0) ix.digest(ix.count - 1);
          return;
        }
        case 'chunk': {
          try {
            const h = decodeChunkHeader(input.bytes, 'fuzz');
            if (input.bytes.length < CHUNK_HEADER_BYTES || !Number.isInteger(h.rawLength)) throw new OracleFailure('bad chunk header accepted');
          } catch (err) {
            if (err instanceof OracleFailure) throw err;
            expectCode(err, ['ERR_CHUNK_CORRUPT'], 'decodeChunkHeader');
          }
          return;
        }
        case 'manifest': {
          try {
            const m = parseManifest(input.text, 'fuzz');
            if (m.format !== POINT_FORMAT || m.version !== POINT_VERSION) throw new OracleFailure('manifest of another format accepted');
          } catch (err) {
            if (err instanceof OracleFailure) throw err;
            expectCode(err, ['ERR_REPO_CORRUPT'], `parseManifest(${JSON.stringify(input.text).slice(0, 200)})`);
          }
          return;
        }
        case 'overlay': {
          const sub = path.join(dir, 'o');
          fs.mkdirSync(sub, { recursive: true });
          fs.writeFileSync(path.join(sub, HEADER_FILE), input.text);
          try {
            const h = await readHeader(sub);
            if (!h || !Number.isSafeInteger(h.size) || h.size < 0) throw new OracleFailure('invalid overlay header accepted');
          } catch (err) {
            if (err instanceof OracleFailure) throw err;
            expectCode(err, ['ERR_OVERLAY_CORRUPT', 'ERR_OVERLAY_VERSION'], `readHeader(${JSON.stringify(input.text).slice(0, 200)})`);
          }
          return;
        }
        case 'map': {
          const map = new BlockMap(input.blocks);
          if (input.page >= map.pageCount) return; // cow-overlay.ts never loads a page past the end
          map.loadPage(input.page, input.bytes);
          if (map.dataBlocks < 0 || map.zeroBlocks < 0 || map.dataBlocks + map.zeroBlocks > input.blocks) {
            throw new OracleFailure(`block map counts out of range: data ${map.dataBlocks} zero ${map.zeroBlocks} of ${input.blocks}`);
          }
          const runs = map.runs(0, input.blocks);
          let next = 0;
          for (const r of runs) {
            if (r.first !== next || r.count <= 0 || r.state > 2) throw new OracleFailure(`bad run ${JSON.stringify(r)}`);
            next += r.count;
          }
          if (next !== input.blocks) throw new OracleFailure(`runs cover ${next} of ${input.blocks} blocks`);
          return;
        }
      }
    },
  };
}
