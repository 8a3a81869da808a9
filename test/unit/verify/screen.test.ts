import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import { decodePpm, encodePng, judgeScreen, type RgbImage } from '../../../src/verify/screen.js';

function image(width: number, height: number, pixel: (x: number, y: number) => [number, number, number]): RgbImage {
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) rgb.set(pixel(x, y), (y * width + x) * 3);
  return { width, height, rgb };
}
const ppm = (img: RgbImage): Buffer => Buffer.concat([Buffer.from(`P6\n# QEMU\n${img.width} ${img.height}\n255\n`), img.rgb]);

describe('screen signal', () => {
  it('calls a one-colour screen blank, whatever the colour', () => {
    expect(judgeScreen(image(64, 32, () => [0, 0, 0]))).toMatchObject({ ok: false, blank: true, dominant: '#000000' });
    expect(judgeScreen(image(64, 32, () => [255, 255, 255]))).toMatchObject({ ok: false, blank: true });
  });

  it('calls a mostly-blue screen with a little text flat (a crash screen)', () => {
    const bsod = image(100, 100, (x, y) => (y % 10 === 0 && x < 50 ? [255, 255, 255] : [0, 0x78, 0xd7]));
    const v = judgeScreen(bsod);
    expect(v).toMatchObject({ ok: false, blank: false, flat: true, dominant: '#0078d7' });
    expect(v.reason).toMatch(/mostly one colour/);
  });

  it('passes a text console: mostly black, but with text on it', () => {
    const console_ = image(100, 100, (x, y) => (y % 8 < 2 && x % 3 === 0 ? [170, 170, 170] : [0, 0, 0]));
    expect(judgeScreen(console_)).toMatchObject({ ok: true, blank: false, flat: false, reason: null });
  });

  it('decodes QEMU PPM dumps (comments included) and refuses what is not one', () => {
    const img = image(5, 3, (x, y) => [x * 10, y * 20, 7]);
    const back = decodePpm(ppm(img));
    expect([back.width, back.height, Buffer.compare(back.rgb, img.rgb)]).toEqual([5, 3, 0]);
    expect(() => decodePpm(Buffer.from('P5\n5 3\n255\n'))).toThrow(/not a P6 PPM/);
    expect(() => decodePpm(Buffer.from('P6\n5 3\n255\nshort'))).toThrow(/not a P6 PPM/);
  });

  it('encodes a PNG that decodes to the same pixels', () => {
    const img = image(7, 4, (x, y) => [x * 30, y * 60, (x + y) % 256]);
    const png = PNG.sync.read(encodePng(img));
    expect([png.width, png.height]).toEqual([7, 4]);
    for (let i = 0; i < 28; i++) expect([...png.data.subarray(i * 4, i * 4 + 3)]).toEqual([...img.rgb.subarray(i * 3, i * 3 + 3)]);
  });
});
