import { ReboundError } from '../errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 1024,
  KB: 1024,
  KIB: 1024,
  M: 1024 ** 2,
  MB: 1024 ** 2,
  MIB: 1024 ** 2,
  G: 1024 ** 3,
  GB: 1024 ** 3,
  GIB: 1024 ** 3,
  T: 1024 ** 4,
  TB: 1024 ** 4,
  TIB: 1024 ** 4,
  P: 1024 ** 5,
  PB: 1024 ** 5,
  PIB: 1024 ** 5,
};

/**
 * The one size parser for config and CLI: `4096`, `64K`, `4M`, `1.5G`, `2TiB`. Units are powers
 * of 1024 (as in qemu-img and nbdkit). The result is a safe integer number of bytes.
 */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (Number.isSafeInteger(text) && text >= 0) return text;
    throw new ReboundError('ERR_INVALID_SIZE', `invalid size ${text}: not a non-negative integer`);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toUpperCase()] : undefined;
  if (!m || unit === undefined) {
    throw new ReboundError('ERR_INVALID_SIZE', `invalid size '${text}': expected a number with an optional unit K, M, G or T`);
  }
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) {
    throw new ReboundError('ERR_INVALID_SIZE', `invalid size '${text}': not a whole number of bytes, or too large`);
  }
  return bytes;
}

/** Human-readable size: 1536 -> '1.5 KiB'. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  const digits = i === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${Number(value.toFixed(digits))} ${units[i]}`;
}

/**
 * The shortest text `parseSize` reads back as exactly `bytes`: 268435456 -> '256M', 1536 -> '1536'.
 * For defaults in docs and `--help`, where '256M' says more than '268435456' or '256 MiB'.
 */
export function formatSizeExact(bytes: number): string {
  const suffixes = ['K', 'M', 'G', 'T', 'P'];
  let value = bytes;
  let suffix = '';
  for (const s of suffixes) {
    if (value === 0 || value % 1024 !== 0) break;
    value /= 1024;
    suffix = s;
  }
  return `${value}${suffix}`;
}
