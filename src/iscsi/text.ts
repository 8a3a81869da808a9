/**
 * iSCSI text keys (RFC 7143 §6, §13): `key=value` pairs, each ended by a NUL, in Login and Text
 * data segments (possibly spread over PDUs with the Continue bit: callers join the segments first).
 *
 * Decoding never throws: hostile input gives `{ ok: false, reason }`. Limits: a key of at most 63
 * bytes from the RFC's character set, values of at most `maxValue` bytes (255 for most keys; CHAP
 * values are longer, so the default is 8 KiB), at most `maxPairs` pairs, no key twice.
 */

export type TextPairs = Array<[string, string]>;

export interface TextLimits {
  maxKey: number;
  maxValue: number;
  maxPairs: number;
}

export const DEFAULT_TEXT_LIMITS: TextLimits = { maxKey: 63, maxValue: 8192, maxPairs: 256 };
/** Bytes of text one negotiation round may gather over Continue PDUs. */
export const MAX_TEXT_BYTES = 64 * 1024;

export type TextResult = { ok: true; pairs: TextPairs } | { ok: false; reason: string };

const KEY = /^[A-Za-z0-9.\-+@_]+$/;

export function parseText(buf: Uint8Array, limits: TextLimits = DEFAULT_TEXT_LIMITS): TextResult {
  const pairs: TextPairs = [];
  const seen = new Set<string>();
  let start = 0;
  const n = buf.length;
  // Empty items (NUL padding some initiators add) are skipped; an unterminated last pair is an error.
  while (start < n) {
    const nul = buf.indexOf(0, start);
    if (nul < 0) return { ok: false, reason: 'text not terminated by a NUL' };
    const item = Buffer.from(buf.buffer, buf.byteOffset + start, nul - start);
    start = nul + 1;
    if (item.length === 0) continue;
    const eq = item.indexOf(0x3d); // '='
    if (eq <= 0) return { ok: false, reason: 'text item without key=value' };
    if (eq > limits.maxKey) return { ok: false, reason: `key longer than ${limits.maxKey} bytes` };
    const key = item.subarray(0, eq).toString('latin1');
    if (!KEY.test(key)) return { ok: false, reason: 'key with characters outside the RFC set' };
    if (item.length - eq - 1 > limits.maxValue) return { ok: false, reason: `value of ${key} longer than ${limits.maxValue} bytes` };
    if (seen.has(key)) return { ok: false, reason: `key ${key} given twice` };
    seen.add(key);
    if (pairs.length >= limits.maxPairs) return { ok: false, reason: `more than ${limits.maxPairs} keys` };
    pairs.push([key, item.subarray(eq + 1).toString('utf8')]);
  }
  return { ok: true, pairs };
}

export function encodeText(pairs: Iterable<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of pairs) parts.push(Buffer.from(`${k}=${v}\0`, 'utf8'));
  return Buffer.concat(parts);
}

/** A numerical value (decimal, 0x hex or 0b base64), or undefined if it is not one. */
export function parseNumber(v: string): number | undefined {
  if (/^[0-9]{1,16}$/.test(v)) return Number(v);
  if (/^0[xX][0-9a-fA-F]{1,13}$/.test(v)) return Number.parseInt(v.slice(2), 16);
  return undefined;
}

/** A binary value (0x hex or 0b base64), or undefined if malformed. */
export function parseBinary(v: string): Buffer | undefined {
  if (/^0[xX]([0-9a-fA-F]{2})+$/.test(v)) return Buffer.from(v.slice(2), 'hex');
  if (/^0[xX][0-9a-fA-F]+$/.test(v)) return Buffer.from('0' + v.slice(2), 'hex'); // odd digit count: leading zero
  if (/^0[bB][A-Za-z0-9+/]+={0,2}$/.test(v)) return Buffer.from(v.slice(2), 'base64');
  return undefined;
}

export function encodeBinary(b: Buffer): string {
  return '0x' + b.toString('hex');
}

/** Splits text into pieces of at most `max` bytes (the peer's MaxRecvDataSegmentLength). */
export function splitText(buf: Buffer, max: number): Buffer[] {
  if (buf.length <= max) return [buf];
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += max) out.push(buf.subarray(i, i + max));
  return out;
}
