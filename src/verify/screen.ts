/**
 * The screen signal: QEMU's `screendump` writes a PPM (P6); this module decodes it, judges it and
 * encodes it as PNG (pngjs) to keep with the result.
 *
 * Judgement, on the colour histogram:
 *  - blank: all but BLANK_SHARE of the pixels have one colour (whatever colour: a black screen, a
 *    screen the guest never drew on);
 *  - flat: one colour that is not dark covers FLAT_SHARE or more (a crashed Windows is mostly one
 *    blue with a little white text). A text console is mostly black with grey text, so a dark
 *    dominant colour is not "flat": it is judged by the blank rule only.
 * A screen that is neither has something on it: the signal passes.
 */
import { PNG } from 'pngjs';
import { ReboundError } from '../errors.js';

export const BLANK_SHARE = 0.999;
export const FLAT_SHARE = 0.75;
const DARK_LUMA = 48;

export interface RgbImage {
  width: number;
  height: number;
  /** width * height * 3 bytes, RGB. */
  rgb: Buffer;
}

export interface ScreenVerdict {
  width: number;
  height: number;
  ok: boolean;
  blank: boolean;
  flat: boolean;
  /** The most common colour as #rrggbb and its share of the pixels (0..1). */
  dominant: string;
  share: number;
  colours: number;
  reason: string | null;
}

/** Decodes a binary PPM (P6, maxval 255) as QEMU writes it. */
export function decodePpm(buf: Buffer): RgbImage {
  let pos = 0;
  const token = (): string => {
    for (;;) {
      while (pos < buf.length && /\s/.test(String.fromCharCode(buf[pos]!))) pos++;
      if (buf[pos] === 0x23) while (pos < buf.length && buf[pos] !== 0x0a) pos++;
      else break;
    }
    const start = pos;
    while (pos < buf.length && !/\s/.test(String.fromCharCode(buf[pos]!))) pos++;
    return buf.toString('latin1', start, pos);
  };
  const magic = token();
  const width = Number(token());
  const height = Number(token());
  const max = Number(token());
  pos++; // the single whitespace before the pixels
  if (magic !== 'P6' || !(width > 0) || !(height > 0) || max !== 255 || buf.length - pos < width * height * 3) {
    throw new ReboundError('ERR_VERIFY_UNAVAILABLE', `the screen dump is not a P6 PPM of 8-bit colours (${magic} ${width}x${height} max ${max})`);
  }
  return { width, height, rgb: buf.subarray(pos, pos + width * height * 3) };
}

export function judgeScreen(img: RgbImage): ScreenVerdict {
  const counts = new Map<number, number>();
  const n = img.width * img.height;
  for (let i = 0; i < n; i++) {
    const c = (img.rgb[i * 3]! << 16) | (img.rgb[i * 3 + 1]! << 8) | img.rgb[i * 3 + 2]!;
    counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  let top = 0;
  let topCount = 0;
  for (const [c, k] of counts) if (k > topCount) [top, topCount] = [c, k];
  const share = topCount / n;
  const r = top >> 16;
  const g = (top >> 8) & 0xff;
  const b = top & 0xff;
  const luma = 0.299 * r + 0.587 * g + 0.114 * b;
  const dominant = '#' + top.toString(16).padStart(6, '0');
  const blank = share >= BLANK_SHARE;
  const flat = !blank && luma > DARK_LUMA && share >= FLAT_SHARE;
  const pct = (share * 100).toFixed(1);
  const reason = blank ? `the screen is blank (${pct} % ${dominant})` : flat ? `the screen is mostly one colour (${pct} % ${dominant}), like a crash screen` : null;
  return { width: img.width, height: img.height, ok: !blank && !flat, blank, flat, dominant, share, colours: counts.size, reason };
}

export function encodePng(img: RgbImage): Buffer {
  const png = new PNG({ width: img.width, height: img.height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
  png.data = Buffer.from(img.rgb);
  return PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
}
