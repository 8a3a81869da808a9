/**
 * The BlockDevice conformance suite (DESIGN.md §3). Every base, every layer, every target and full
 * stacks run it (blockdev.test.ts, cow.test.ts, repo-image.test.ts, layers.test.ts, targets.test.ts),
 * always through checked() as the front ends do. A factory returns a fresh device and the bytes it
 * holds initially; the suite adapts to the device's capabilities (read-only devices must refuse
 * the write path with EROFS, writable ones must honour it exactly).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checked, type CheckedDevice } from '../../src/blockdev/checked.js';
import type { BlockDevice, Extent } from '../../src/blockdev/types.js';
import { BlockError } from '../../src/errors.js';

export interface SuiteDevice {
  device: BlockDevice;
  /** The device's content when created. */
  expected: Buffer;
  cleanup?: () => Promise<void> | void;
}

export type SuiteFactory = () => Promise<SuiteDevice>;

/** A deterministic PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return s / 0x100000000;
  };
}

async function expectBlockError(p: Promise<unknown>, code: BlockError['code']): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(BlockError);
  expect((err as BlockError).code).toBe(code);
}

async function readAll(dev: CheckedDevice): Promise<Buffer> {
  const out = Buffer.alloc(dev.size);
  const step = 4 * 1024 * 1024;
  for (let off = 0; off < dev.size; off += step) {
    await dev.read(out.subarray(off, Math.min(off + step, dev.size)), off);
  }
  return out;
}

async function allExtents(dev: CheckedDevice, offset: number, length: number): Promise<Extent[]> {
  const out: Extent[] = [];
  let pos = offset;
  while (pos < offset + length) {
    const answer = await dev.extents(pos, offset + length - pos);
    expect(answer.length).toBeGreaterThan(0);
    expect(answer[0]!.offset).toBe(pos);
    for (const e of answer) {
      expect(e.offset).toBe(pos);
      expect(e.length).toBeGreaterThan(0);
      out.push(e);
      pos += e.length;
    }
  }
  expect(pos).toBe(offset + length);
  return out;
}

/** Extents must never call data zero: every byte of a `zero` extent reads as 0. */
function checkExtentsTruthful(extents: Extent[], content: Buffer): void {
  for (const e of extents) {
    if (!e.zero) continue;
    const slice = content.subarray(e.offset, e.offset + e.length);
    const nonZero = slice.findIndex((b) => b !== 0);
    expect(nonZero, `extent at ${e.offset} (+${e.length}) claims zero but byte ${e.offset + nonZero} is data`).toBe(-1);
  }
}

export function blockDeviceSuite(label: string, factory: SuiteFactory): void {
  describe(`BlockDevice conformance: ${label}`, () => {
    let sd: SuiteDevice;
    let dev: CheckedDevice;
    let model: Buffer;

    beforeEach(async () => {
      sd = await factory();
      dev = checked(sd.device);
      model = Buffer.from(sd.expected);
    });
    afterEach(async () => {
      await dev.close();
      await sd.cleanup?.();
    });

    it('has a sane size and capabilities', () => {
      expect(Number.isSafeInteger(dev.size)).toBe(true);
      expect(dev.size).toBe(sd.expected.length);
      const bs = dev.capabilities().blockSize;
      const pow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
      expect(pow2(bs.min) && bs.min <= 65536).toBe(true);
      expect(pow2(bs.preferred) && bs.preferred >= bs.min).toBe(true);
      expect(bs.max).toBeGreaterThanOrEqual(bs.preferred);
      expect(dev.size % bs.min).toBe(0);
      const caps = dev.capabilities();
      if (caps.canFastZero) expect(caps.canZero).toBe(true);
      if (!caps.canWrite) expect(caps.canTrim || caps.canZero || caps.canFua).toBe(false);
    });

    it('reads back its whole content exactly', async () => {
      expect((await readAll(dev)).equals(model)).toBe(true);
    });

    it('reads unaligned ranges, single bytes and the tail', async () => {
      const r = rng(7);
      const min = dev.capabilities().blockSize.min;
      for (let i = 0; i < 200; i++) {
        let off = Math.floor(r() * dev.size);
        let len = 1 + Math.floor(r() * Math.min(200_000, dev.size - off));
        off -= off % min;
        len = Math.max(min, len - (len % min));
        if (off + len > dev.size) continue;
        const buf = Buffer.alloc(len, 0xee);
        await dev.read(buf, off);
        expect(buf.equals(model.subarray(off, off + len)), `read ${off}+${len}`).toBe(true);
      }
      const tail = Buffer.alloc(min);
      await dev.read(tail, dev.size - min);
      expect(tail.equals(model.subarray(dev.size - min))).toBe(true);
    });

    it('serves many concurrent reads correctly', async () => {
      const r = rng(11);
      const jobs = Array.from({ length: 64 }, () => {
        const len = 4096;
        const off = Math.floor(r() * ((dev.size - len) / 4096)) * 4096;
        const buf = Buffer.alloc(len);
        return dev.read(buf, off).then(() => expect(buf.equals(model.subarray(off, off + len))).toBe(true));
      });
      await Promise.all(jobs);
    });

    it('rejects reads past the end with EINVAL and oversized reads with EOVERFLOW', async () => {
      await expectBlockError(dev.read(Buffer.alloc(2), dev.size - 1), 'EINVAL');
      await expectBlockError(dev.read(Buffer.alloc(1), dev.size), 'EINVAL');
      const max = dev.capabilities().blockSize.max;
      if (max < dev.size) await expectBlockError(dev.read(Buffer.alloc(max + 1), 0), 'EOVERFLOW');
    });

    it('answers extents contiguously, clipped to the request, and never calls data zero', async () => {
      const extents = await allExtents(dev, 0, dev.size);
      checkExtentsTruthful(extents, model);
      const mid = Math.floor(dev.size / 3);
      const part = await allExtents(dev, mid, Math.min(1_000_000, dev.size - mid));
      checkExtentsTruthful(part, model);
      await expectBlockError(dev.extents(dev.size, 1), 'EINVAL');
      await expectBlockError(dev.extents(0, 0), 'EINVAL');
    });

    it('flush succeeds when advertised', async () => {
      if (dev.capabilities().canFlush) await dev.flush();
      else await expectBlockError(dev.flush(), 'EINVAL');
    });

    it('refuses new requests with ESHUTDOWN once closed, after in-flight ones finish', async () => {
      const buf = Buffer.alloc(4096);
      const pending = dev.read(buf, 0);
      const closing = dev.close();
      await pending;
      await closing;
      expect(buf.equals(model.subarray(0, 4096))).toBe(true);
      await expectBlockError(dev.read(Buffer.alloc(1), 0), 'ESHUTDOWN');
    });

    describe('write path', () => {
      it('is refused with EROFS on a read-only device, before any range check', async () => {
        if (dev.capabilities().canWrite) return;
        await expectBlockError(dev.write(Buffer.alloc(512), 0), 'EROFS');
        await expectBlockError(dev.write(Buffer.alloc(512), dev.size), 'EROFS');
        await expectBlockError(dev.trim(0, 512), 'EROFS');
        await expectBlockError(dev.zero(0, 512), 'EROFS');
        // The device itself refuses too, even when called without checked().
        await expectBlockError(sd.device.write(Buffer.alloc(512), 0), 'EROFS');
        await expectBlockError(sd.device.trim(0, 512), 'EROFS');
        await expectBlockError(sd.device.zero(0, 512), 'EROFS');
        expect((await readAll(dev)).equals(model)).toBe(true);
      });

      it('writes land exactly, aligned and unaligned, including the tail', async () => {
        if (!dev.capabilities().canWrite) return;
        const r = rng(3);
        const min = dev.capabilities().blockSize.min;
        for (let i = 0; i < 100; i++) {
          let off = Math.floor(r() * dev.size);
          let len = 1 + Math.floor(r() * Math.min(100_000, dev.size - off));
          off -= off % min;
          len = Math.max(min, len - (len % min));
          if (off + len > dev.size) continue;
          const data = Buffer.alloc(len);
          for (let j = 0; j < len; j++) data[j] = Math.floor(r() * 256);
          await dev.write(data, off, { fua: dev.capabilities().canFua && i % 5 === 0 });
          data.copy(model, off);
        }
        const tail = Buffer.alloc(min, 0x5a);
        await dev.write(tail, dev.size - min);
        tail.copy(model, dev.size - min);
        if (dev.capabilities().canFlush) await dev.flush();
        expect((await readAll(dev)).equals(model)).toBe(true);
        checkExtentsTruthful(await allExtents(dev, 0, dev.size), model);
      });

      it('concurrent writes to overlapping blocks end with one of the writes, never a mix within a request', async () => {
        if (!dev.capabilities().canWrite) return;
        const a = Buffer.alloc(8192, 0xaa);
        const b = Buffer.alloc(8192, 0xbb);
        await Promise.all([dev.write(a, 4096), dev.write(b, 4096)]);
        const out = Buffer.alloc(8192);
        await dev.read(out, 4096);
        expect(out.equals(a) || out.equals(b)).toBe(true);
      });

      it('zero makes a range read as zeroes and leaves its neighbours alone', async () => {
        const caps = dev.capabilities();
        if (!caps.canWrite || !caps.canZero) return;
        const data = Buffer.alloc(300_000, 0x77);
        await dev.write(data, 100_000);
        data.copy(model, 100_000);
        await dev.zero(150_000, 100_000);
        model.fill(0, 150_000, 250_000);
        await dev.zero(260_000, 4096, { noHole: true, fua: caps.canFua });
        model.fill(0, 260_000, 264_096);
        if (caps.canFastZero) {
          // NBD spec: a device that offers fast zero may still refuse one it cannot do fast
          // (ENOTSUP, nothing changed), e.g. a switch whose current device writes its zeroes.
          const fast = await dev.zero(300_000, 50_000, { fast: true }).then(
            () => true,
            (err: unknown) => {
              expect(err).toBeInstanceOf(BlockError);
              expect((err as BlockError).code).toBe('ENOTSUP');
              return false;
            },
          );
          if (fast) model.fill(0, 300_000, 350_000);
        } else {
          await expectBlockError(dev.zero(300_000, 50_000, { fast: true }), 'ENOTSUP');
        }
        expect((await readAll(dev)).equals(model)).toBe(true);
        checkExtentsTruthful(await allExtents(dev, 0, dev.size), model);
        await expectBlockError(dev.zero(dev.size - 10, 20), 'ENOSPC');
      });

      it('trim changes nothing outside its range', async () => {
        const caps = dev.capabilities();
        if (!caps.canWrite || !caps.canTrim) return;
        const data = Buffer.alloc(256 * 1024, 0x42);
        await dev.write(data, 0);
        data.copy(model, 0);
        await dev.trim(65536, 65536);
        const got = await readAll(dev);
        // The trimmed range is unspecified; everything else must be intact.
        expect(got.subarray(0, 65536).equals(model.subarray(0, 65536))).toBe(true);
        expect(got.subarray(131072).equals(model.subarray(131072))).toBe(true);
        checkExtentsTruthful(await allExtents(dev, 0, dev.size), got);
      });

      it('rejects writes past the end with ENOSPC and leaves the content alone', async () => {
        if (!dev.capabilities().canWrite) return;
        await expectBlockError(dev.write(Buffer.alloc(4096, 1), dev.size - 2048), 'ENOSPC');
        expect((await readAll(dev)).equals(model)).toBe(true);
      });
    });
  });
}
