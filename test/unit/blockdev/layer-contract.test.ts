/** The layer contract: LazyDevice never forwards the write path, buildStack, the emulations. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LazyDevice } from '../../../src/blockdev/base/lazy.js';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { WritableFileDevice } from '../../../src/blockdev/base/writable-file.js';
import { zeroByWriting, zeroRange } from '../../../src/blockdev/emulate.js';
import { buildStack, describeStack, findLayer } from '../../../src/blockdev/layer.js';
import { DirtyTracker } from '../../../src/blockdev/layers/dirty-tracker.js';
import { StatsLayer } from '../../../src/blockdev/layers/stats.js';
import { SwitchableDevice } from '../../../src/blockdev/layers/switchable.js';
import type { BlockDevice } from '../../../src/blockdev/types.js';
import { readOnlyCapabilities, writableCapabilities } from '../../../src/blockdev/types.js';
import { BlockError } from '../../../src/errors.js';
import { tempDir } from '../../helpers/images.js';

const MiB = 1024 * 1024;

describe('LazyDevice', () => {
  it('stands in for read-only sources only', () => {
    expect(() => new LazyDevice('x', MiB, writableCapabilities(), async () => new MemoryDevice(MiB))).toThrow(TypeError);
  });

  it('refuses the write path with EROFS without opening (or reaching) the device below', async () => {
    let opened = 0;
    const lazy = new LazyDevice('repo-image', MiB, readOnlyCapabilities(), async () => {
      opened++;
      return new MemoryDevice(MiB);
    });
    const dev: BlockDevice = lazy; // the contract's signatures: the stand-in takes and ignores the arguments
    for (const p of [dev.write(new Uint8Array(512), 0), dev.trim(0, 512), dev.zero(0, 512)]) {
      await expect(p).rejects.toMatchObject({ code: 'EROFS' });
    }
    await lazy.flush();
    expect(opened).toBe(0);
    expect(lazy.opened).toBe(false);
  });

  it('fails (EIO) when the real device is writable or of another size, and tries again next time', async () => {
    let attempt = 0;
    const lazy = new LazyDevice('repo-image', MiB, readOnlyCapabilities(), async () => (attempt++ === 0 ? new MemoryDevice(MiB) : new MemoryDevice(2 * MiB)));
    await expect(lazy.read(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'EIO', message: expect.stringMatching(/writable/) });
    await expect(lazy.read(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'EIO', message: expect.stringMatching(/2097152/) });
    expect(attempt).toBe(2);
  });
});

describe('buildStack', () => {
  it('stacks bottom-up, async factories included; describeStack and findLayer follow next (through a switch)', async () => {
    const base = new MemoryDevice(MiB);
    const top = await buildStack(base, [(next) => new DirtyTracker(next, 65536), async (next) => new SwitchableDevice(next), (next) => new StatsLayer(next)]);
    expect(describeStack(top)).toEqual(['stats', 'switch', 'dirty-tracker', 'memory']);
    expect(findLayer(top, DirtyTracker)?.granule).toBe(65536);
    expect(findLayer(top, StatsLayer)).toBe(top);
    await top.close();
  });

  it('closes what it built when a factory fails, or makes a device that does not sit on the one below', async () => {
    const closed: string[] = [];
    const watch = (dev: BlockDevice): BlockDevice => {
      const close = dev.close.bind(dev);
      dev.close = async () => {
        closed.push(dev.name);
        await close();
      };
      return dev;
    };
    const failing = () => {
      throw new Error('overlay cannot open');
    };
    await expect(buildStack(watch(new MemoryDevice(MiB)), [(next) => watch(new StatsLayer(next)), failing])).rejects.toThrow('overlay cannot open');
    expect(closed).toEqual(['stats', 'memory']);
    closed.length = 0;
    const stray = watch(new MemoryDevice(MiB));
    await expect(buildStack(watch(new MemoryDevice(MiB)), [() => stray])).rejects.toThrow(TypeError);
    expect(closed.length).toBe(2);
  });
});

describe('emulations', () => {
  it('zeroByWriting: written zeroes, FUA as a flush, and ENOTSUP for a fast zero with nothing written', async () => {
    const dev = new MemoryDevice(MiB);
    await dev.write(new Uint8Array(MiB).fill(7), 0);
    let flushes = 0;
    const flush = dev.flush.bind(dev);
    dev.flush = async () => {
      flushes++;
      await flush();
    };
    await expect(zeroByWriting(dev, 0, 4096, { fast: true })).rejects.toMatchObject({ code: 'ENOTSUP' });
    const out = new Uint8Array(MiB);
    await dev.read(out, 0);
    expect(out.every((b) => b === 7)).toBe(true);
    await zeroByWriting(dev, 1000, 500_000, { fua: true });
    await dev.read(out, 0);
    expect(out.subarray(1000, 501_000).every((b) => b === 0)).toBe(true);
    expect(out[999]).toBe(7);
    expect(out[501_000]).toBe(7);
    expect(flushes).toBe(1);
  });

  it('zeroRange falls back to written zeroes when a device refuses WRITE_ZEROES with ENOTSUP', async () => {
    const dev = new MemoryDevice(MiB);
    await dev.write(new Uint8Array(MiB).fill(9), 0);
    dev.zero = async () => {
      throw new BlockError('ENOTSUP', 'no');
    };
    await zeroRange(dev, 4096, 8192);
    const out = new Uint8Array(8192 + 2);
    await dev.read(out, 4095);
    expect([out[0], out[8193]]).toEqual([9, 9]);
    expect(out.subarray(1, 8193).every((b) => b === 0)).toBe(true);
  });
});

describe('WritableFileDevice', () => {
  it('creates a missing file (fresh), keeps a reused one (not fresh), and never shrinks it', async () => {
    const dir = tempDir();
    try {
      const file = path.join(dir, 't.raw');
      const a = await WritableFileDevice.open(file, MiB);
      expect(a.fresh).toBe(true);
      await a.write(new Uint8Array(4096).fill(1), 0);
      await a.close();
      const b = await WritableFileDevice.open(file, MiB / 2);
      expect(b.fresh).toBe(false);
      expect(b.size).toBe(MiB / 2);
      const got = new Uint8Array(1);
      await b.read(got, 0);
      expect(got[0]).toBe(1);
      await b.close();
      expect(fs.statSync(file).size).toBe(MiB);
      const c = await WritableFileDevice.open(file, MiB, { startOver: true });
      expect(c.fresh).toBe(true);
      await c.read(got, 0);
      expect(got[0]).toBe(0);
      await c.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a path that cannot be created is ERR_TARGET_OPEN_FAILED naming it', async () => {
    await expect(WritableFileDevice.open('/nonexistent-dir/t.raw', MiB)).rejects.toMatchObject({
      code: 'ERR_TARGET_OPEN_FAILED',
      message: expect.stringContaining('/nonexistent-dir/t.raw'),
    });
  });
});
