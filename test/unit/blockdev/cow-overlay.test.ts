/** CowOverlay behaviour beyond the conformance suite: persistence, quota, extents, format checks. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { RawFileDevice } from '../../../src/blockdev/base/raw-file.js';
import { checked } from '../../../src/blockdev/checked.js';
import { BlockMap, BLOCKS_PER_PAGE, DATA, ZERO } from '../../../src/blockdev/layers/cow/block-map.js';
import { CowOverlay } from '../../../src/blockdev/layers/cow/cow-overlay.js';
import { BlockError, ReboundError } from '../../../src/errors.js';
import { makeImage, tempDir } from '../../helpers/images.js';

const dirs: string[] = [];
function dir(): string {
  const d = tempDir();
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

async function baseFile(size = 4 * 1024 * 1024): Promise<{ file: string; expected: Buffer }> {
  const file = path.join(dir(), 'base.img');
  return { file, expected: makeImage(file, { size, data: [[0, size / 2]] }) };
}

const code = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: BlockError) => e.code);

describe('CowOverlay', () => {
  it('keeps flushed and gracefully closed writes across reopen; never touches the base', async () => {
    const { file, expected } = await baseFile();
    const before = { sha: sha(file), mtime: fs.statSync(file).mtimeMs };
    const ovDir = path.join(dir(), 'ov');
    let ov = await CowOverlay.open(await RawFileDevice.open(file), { dir: ovDir, baseId: file });
    await ov.write(Buffer.alloc(10_000, 0x61), 123_457);
    await ov.flush();
    await ov.write(Buffer.alloc(5, 0x62), 3 * 1024 * 1024 + 1); // unflushed, but close() flushes
    await ov.zero(0, 8192);
    await ov.close();
    expected.fill(0x61, 123_457, 133_457);
    expected.fill(0x62, 3 * 1024 * 1024 + 1, 3 * 1024 * 1024 + 6);
    expected.fill(0, 0, 8192);

    ov = await CowOverlay.open(await RawFileDevice.open(file), { dir: ovDir, baseId: file });
    const got = Buffer.alloc(expected.length);
    await ov.read(got, 0);
    expect(got.equals(expected)).toBe(true);
    expect(ov.stats()).toMatchObject({ dataBlocks: 4, zeroBlocks: 2, allocatedBytes: 4 * 4096 });
    await ov.close();
    expect({ sha: sha(file), mtime: fs.statSync(file).mtimeMs }).toEqual(before);
  });

  it('recovers flushed state when the process "crashes" (overlay reopened without close)', async () => {
    const { file } = await baseFile(80 * 1024 * 1024);
    const ovDir = path.join(dir(), 'ov');
    const a = await CowOverlay.open(await RawFileDevice.open(file), { dir: ovDir, baseId: file });
    await a.write(Buffer.alloc(4096, 1), 0);
    await a.write(Buffer.alloc(4096, 2), BLOCKS_PER_PAGE * 4096); // second map page
    await a.flush();
    await a.write(Buffer.alloc(4096, 3), 8192); // never flushed: allowed to vanish
    const b = await CowOverlay.open(await RawFileDevice.open(file), { dir: ovDir, baseId: file });
    const x = Buffer.alloc(4096);
    await b.read(x, 0);
    expect(x.every((v) => v === 1)).toBe(true);
    await b.read(x, BLOCKS_PER_PAGE * 4096);
    expect(x.every((v) => v === 2)).toBe(true);
    await b.close();
    await a.close();
  });

  it('enforces the quota with ENOSPC, keeps working, and accepts writes again after a trim', async () => {
    const base = new MemoryDevice(1024 * 1024);
    const ov = checked(await CowOverlay.open(base, { dir: path.join(dir(), 'ov'), baseId: 'mem', maxBytes: 64 * 1024 }));
    expect(await code(ov.write(Buffer.alloc(64 * 1024, 7), 0))).toBe('ok');
    expect(await code(ov.write(Buffer.alloc(1, 8), 65536))).toBe('ENOSPC');
    expect(await code(ov.write(Buffer.alloc(4096, 9), 4096))).toBe('ok'); // rewriting held blocks needs no room
    expect(await code(ov.flush())).toBe('ok');
    expect(await code(ov.trim(0, 8192))).toBe('ok');
    expect(await code(ov.write(Buffer.alloc(8192, 10), 499_712))).toBe('ok'); // exactly the 2 blocks freed
    expect(await code(ov.write(Buffer.alloc(4096, 10), 600_000))).toBe('ENOSPC');
    const x = Buffer.alloc(4096);
    await ov.read(x, 4096);
    expect(x.every((v) => v === 0)).toBe(true); // trimmed
    await ov.read(x, 8192);
    expect(x.every((v) => v === 7)).toBe(true);
    await ov.close();
  });

  it('merges its map with the base extents', async () => {
    const base = new MemoryDevice(1024 * 1024);
    await base.write(Buffer.alloc(65536, 1), 65536); // base data at 64K..128K, holes elsewhere
    const ov = await CowOverlay.open(base, { dir: path.join(dir(), 'ov'), baseId: 'mem' });
    await ov.write(Buffer.alloc(4096, 2), 0);
    await ov.zero(65536, 8192);
    const ext = await checked(ov).extents(0, 1024 * 1024);
    expect(ext).toEqual([
      { offset: 0, length: 4096, hole: false, zero: false },
      // base hole (4K..64K) and overlay ZERO blocks (64K..72K) read alike: one extent
      { offset: 4096, length: 69632, hole: true, zero: true },
      { offset: 73728, length: 57344, hole: false, zero: false },
      { offset: 131072, length: 917504, hole: true, zero: true },
    ]);
    await ov.close();
  });

  it('refuses a different base and a newer format version', async () => {
    const { file } = await baseFile();
    const ovDir = path.join(dir(), 'ov');
    await (await CowOverlay.open(await RawFileDevice.open(file), { dir: ovDir, baseId: file })).close();
    await expect(CowOverlay.open(new MemoryDevice(1024), { dir: ovDir, baseId: file })).rejects.toThrow(/was made for base/);
    await expect(CowOverlay.open(await RawFileDevice.open(file), { dir: ovDir, baseId: '/other.img' })).rejects.toMatchObject({
      code: 'ERR_OVERLAY_BASE_MISMATCH',
    });
    const header = path.join(ovDir, 'overlay.json');
    fs.writeFileSync(header, fs.readFileSync(header, 'utf8').replace('"version": 1', '"version": 2'));
    const err = await CowOverlay.open(await RawFileDevice.open(file), { dir: ovDir, baseId: file }).catch((e) => e);
    expect(err).toBeInstanceOf(ReboundError);
    expect(err.code).toBe('ERR_OVERLAY_VERSION');
  });

  it('reads the committed format-1 fixture and keeps working on it', async () => {
    const fixture = path.join(import.meta.dirname, '../../fixtures/cow-v1');
    const copy = dir();
    fs.cpSync(fixture, copy, { recursive: true });
    const ov = await CowOverlay.open(await RawFileDevice.open(path.join(copy, 'base.img')), { dir: path.join(copy, 'overlay'), baseId: 'base.img' });
    const got = Buffer.alloc(65536);
    await ov.read(got, 0);
    expect(got.equals(fs.readFileSync(path.join(fixture, 'expected.img')))).toBe(true);
    await ov.write(Buffer.alloc(10, 0xee), 0);
    await ov.read(got, 0);
    expect(got.subarray(0, 10).every((b) => b === 0xee)).toBe(true);
    await ov.close();
  });
});

describe('BlockMap', () => {
  it('packs states, counts them, and reports runs across pages', () => {
    const m = new BlockMap(3 * BLOCKS_PER_PAGE);
    m.setRange(BLOCKS_PER_PAGE - 2, 4, DATA);
    m.setRange(5, 3, ZERO);
    expect(m.dataBlocks).toBe(4);
    expect(m.zeroBlocks).toBe(3);
    expect(m.runs(0, 3 * BLOCKS_PER_PAGE)).toEqual([
      { first: 0, count: 5, state: 0 },
      { first: 5, count: 3, state: ZERO },
      { first: 8, count: BLOCKS_PER_PAGE - 10, state: 0 },
      { first: BLOCKS_PER_PAGE - 2, count: 4, state: DATA },
      { first: BLOCKS_PER_PAGE + 2, count: 2 * BLOCKS_PER_PAGE - 2, state: 0 },
    ]);
    const dirty = m.takeDirty();
    expect(dirty.map((d) => d.page)).toEqual([0, 1]);
    expect(m.takeDirty()).toEqual([]);
    const copy = new BlockMap(3 * BLOCKS_PER_PAGE);
    for (const d of dirty) copy.loadPage(d.page, d.bytes);
    expect(copy.dataBlocks).toBe(4);
    expect(copy.get(BLOCKS_PER_PAGE + 1)).toBe(DATA);
  });
});

function sha(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}
