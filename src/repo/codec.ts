/**
 * Chunk compression codecs. A chunk file names its codec by id, so a repository can change its
 * codec for new chunks and still read old ones. Compression runs off the event loop (zlib's thread
 * pool), so a backup never stalls the exports the daemon serves.
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { ReboundError } from '../errors.js';

export interface Codec {
  readonly id: number;
  readonly name: string;
  compress(raw: Uint8Array): Promise<Uint8Array>;
  decompress(data: Uint8Array, rawLength: number): Promise<Uint8Array>;
}

const deflateRaw = promisify(zlib.deflateRaw);
const inflateRaw = promisify(zlib.inflateRaw);

export const NONE: Codec = {
  id: 0,
  name: 'none',
  compress: async (raw) => raw,
  decompress: async (data) => data,
};

export const DEFLATE: Codec = {
  id: 1,
  name: 'deflate',
  compress: (raw) => deflateRaw(raw, { level: 1 }),
  decompress: (data, rawLength) => inflateRaw(data, { maxOutputLength: Math.max(rawLength, 1) }),
};

const CODECS = new Map<number, Codec>([NONE, DEFLATE].map((c) => [c.id, c]));
const BY_NAME = new Map<string, Codec>([NONE, DEFLATE].map((c) => [c.name, c]));

export function codecById(id: number): Codec {
  const c = CODECS.get(id);
  if (!c) throw new ReboundError('ERR_CHUNK_CORRUPT', `unknown chunk codec ${id}`);
  return c;
}

export function codecByName(name: string): Codec {
  const c = BY_NAME.get(name);
  if (!c) throw new ReboundError('ERR_INVALID_ARGUMENT', `unknown codec '${name}' (known: ${[...BY_NAME.keys()].join(', ')})`);
  return c;
}
