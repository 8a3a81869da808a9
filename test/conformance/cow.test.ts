/** The conformance suite over CowOverlay, on a memory base and a raw-file base, at several block sizes. */
import fs from 'node:fs';
import path from 'node:path';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { CowOverlay } from '../../src/blockdev/layers/cow/cow-overlay.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { blockDeviceSuite, type SuiteDevice } from './blockdev-suite.js';

const SIZE = 16 * 1024 * 1024;

async function overMemory(blockSize: number): Promise<SuiteDevice> {
  const dir = tempDir();
  const base = new MemoryDevice(SIZE);
  const expected = makeImage(path.join(dir, 'x.img'), standardLayout(SIZE));
  for (let off = 0; off < SIZE; off += 1024 * 1024) {
    const slice = expected.subarray(off, off + 1024 * 1024);
    if (slice.some((b) => b !== 0)) await base.write(slice, off);
  }
  const device = await CowOverlay.open(base, { dir: path.join(dir, 'overlay'), baseId: 'memory', blockSize });
  return { device, expected, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

async function overRawFile(blockSize: number, size = SIZE): Promise<SuiteDevice> {
  const dir = tempDir();
  const file = path.join(dir, 'base.img');
  const expected = makeImage(file, standardLayout(size));
  const device = await CowOverlay.open(await RawFileDevice.open(file), { dir: path.join(dir, 'overlay'), baseId: file, blockSize });
  return { device, expected, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

blockDeviceSuite('cow (4 KiB blocks) over memory', () => overMemory(4096));
blockDeviceSuite('cow (4 KiB blocks) over raw-file', () => overRawFile(4096));
blockDeviceSuite('cow (64 KiB blocks) over raw-file', () => overRawFile(65536));
blockDeviceSuite('cow (512 B blocks) over raw-file', () => overRawFile(512));
blockDeviceSuite('cow (64 KiB blocks) over raw-file, size not a multiple of the block size', () => overRawFile(65536, SIZE - 1000));
