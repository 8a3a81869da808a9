/**
 * metrics/io-meter.ts: the metering layer passes the synchronous read (readNow) and the file-span
 * send (withFileSpan) through only when the device below has them, and counts each as the read it
 * replaces; a device without them is read the ordinary way, and counted once.
 */
import { expect, it } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import type { BlockDevice } from '../../../src/blockdev/types.js';
import { DiskIo, IO_OPS, MeteredDevice } from '../../../src/metrics/io-meter.js';

const READ = IO_OPS.indexOf('read');

it('readNow and withFileSpan are offered only when the device below has them, and count as reads', async () => {
  const plain = new MeteredDevice(new MemoryDevice(4096), new DiskIo());
  expect(plain.readNow).toBeUndefined();
  expect(await plain.withFileSpan(0, 512, async () => undefined)).toBe(false);
  expect(plain.io.ops[READ]).toBe(0);

  const mem = new MemoryDevice(4096);
  const below: BlockDevice = Object.assign(Object.create(mem) as BlockDevice, {
    readNow: (dst: Uint8Array, offset: number) => offset === 0 && dst.fill(9) !== undefined,
    withFileSpan: async (offset: number, _length: number, send: (s: { fd: number; position: number }) => Promise<void>) => {
      await send({ fd: 3, position: offset });
      return true;
    },
  });
  const io = new DiskIo();
  const metered = new MeteredDevice(below, io);
  expect(metered.readNow!(Buffer.alloc(512), 0)).toBe(true);
  expect(metered.readNow!(Buffer.alloc(512), 512)).toBe(false); // not answered: not counted
  expect(await metered.withFileSpan(1024, 2048, async () => undefined)).toBe(true);
  expect(io.ops[READ]).toBe(2);
  expect(io.bytes[READ]).toBe(512 + 2048);
  await expect(metered.withFileSpan(0, 512, async () => Promise.reject(new Error('socket gone')))).rejects.toThrow('socket gone');
  expect(io.errors[READ]).toBe(1);
});
