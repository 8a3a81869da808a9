/**
 * Regression: the switch gate of a recovery session closed one microtask late. `exclusive()` set
 * the gate inside a promise callback, so a request issued right after the call (in the same tick)
 * slipped in ahead of the switch and went to the old device: a write of the VM could land in the
 * overlay after the final copy and be lost on the migration target.
 * Fixed in d7e4d81 ("Sessions: switch gate closes synchronously").
 */
import { expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { SwitchableDevice } from '../../src/blockdev/layers/switchable.js';

const SIZE = 1024 * 1024;

async function byteAt(dev: MemoryDevice, offset: number): Promise<number> {
  const b = Buffer.alloc(1);
  await dev.read(b, offset);
  return b[0]!;
}

it('holds a write issued right after exclusive() until the switch, then sends it to the new device', async () => {
  const a = new MemoryDevice(SIZE);
  const b = new MemoryDevice(SIZE);
  const sw = new SwitchableDevice(a);
  const order: string[] = [];
  const switching = sw.exclusive(async () => {
    order.push('switch');
    sw.switchTo(b);
  });
  const late = sw.write(Buffer.alloc(512, 0xee), 4096).then(() => order.push('write'));
  await Promise.all([switching, late]);
  expect(order).toEqual(['switch', 'write']);
  expect(await byteAt(b, 4096)).toBe(0xee);
  expect(await byteAt(a, 4096)).toBe(0);
});

it('holds every kind of request issued in the same tick as exclusive()', async () => {
  const a = new MemoryDevice(SIZE);
  const b = new MemoryDevice(SIZE);
  await a.write(Buffer.alloc(512, 0xaa), 0);
  await b.write(Buffer.alloc(512, 0xbb), 0);
  const sw = new SwitchableDevice(a);
  let switched = false;
  const switching = sw.exclusive(async () => {
    sw.switchTo(b);
    switched = true;
  });
  const seen: boolean[] = [];
  const read = Buffer.alloc(512);
  const requests = [
    sw.read(read, 0).then(() => seen.push(switched)),
    sw.write(Buffer.alloc(512, 1), 8192).then(() => seen.push(switched)),
    sw.zero(16384, 512).then(() => seen.push(switched)),
    sw.flush().then(() => seen.push(switched)),
    sw.extents(0, 4096).then(() => seen.push(switched)),
  ];
  await Promise.all([switching, ...requests]);
  expect(seen).toEqual([true, true, true, true, true]);
  expect(read[0]).toBe(0xbb);
  expect(await byteAt(b, 8192)).toBe(1);
  expect(await byteAt(a, 8192)).toBe(0);
});
