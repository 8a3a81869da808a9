/** Runs the BlockDevice conformance suite against every base and layer that exists. */
import fs from 'node:fs';
import path from 'node:path';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { FaultLayer } from '../../src/blockdev/layers/fault.js';
import { buildStack } from '../../src/blockdev/layer.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { blockDeviceSuite, type SuiteDevice } from './blockdev-suite.js';

const SIZE = 16 * 1024 * 1024;

async function memory(): Promise<SuiteDevice> {
  return { device: new MemoryDevice(SIZE), expected: Buffer.alloc(SIZE) };
}

async function rawFile(): Promise<SuiteDevice> {
  const dir = tempDir();
  const file = path.join(dir, 'base.img');
  const expected = makeImage(file, standardLayout(SIZE));
  return {
    device: await RawFileDevice.open(file),
    expected,
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

async function overMemoryWithPattern(): Promise<SuiteDevice> {
  const device = new MemoryDevice(SIZE);
  const dir = tempDir();
  const expected = makeImage(path.join(dir, 'x.img'), standardLayout(SIZE));
  fs.rmSync(dir, { recursive: true, force: true });
  for (let off = 0; off < SIZE; off += 1024 * 1024) await device.write(expected.subarray(off, off + 1024 * 1024), off);
  return { device, expected };
}

blockDeviceSuite('memory (empty)', memory);
blockDeviceSuite('memory (patterned)', overMemoryWithPattern);
blockDeviceSuite('raw-file', rawFile);
blockDeviceSuite('fault layer over memory (no faults)', async () => {
  const sd = await overMemoryWithPattern();
  return { ...sd, device: await buildStack(sd.device, [(next) => new FaultLayer(next)]) };
});
blockDeviceSuite('fault layer over raw-file (delays)', async () => {
  const sd = await rawFile();
  let n = 0;
  return { ...sd, device: new FaultLayer(sd.device, { delayMs: () => (n++ % 7 === 0 ? 2 : 0) }) };
});
