/** Builds chunk maps and stores from buffers, for RepoImage and repository tests. */
import crypto from 'node:crypto';
import type { ChunkReader } from '../../src/blockdev/base/repo-image.js';
import { FixedIndex } from '../../src/repo/format.js';
import type { ChunkStore } from '../../src/repo/chunk-store.js';

/** An index over `content` with chunks kept in memory (a ChunkReader that counts reads). */
export function memoryChunks(content: Buffer, chunkSize: number): { index: FixedIndex; reader: ChunkReader & { reads: number }; chunks: Map<string, Buffer> } {
  const index = new FixedIndex(content.length, chunkSize);
  const chunks = new Map<string, Buffer>();
  for (let i = 0; i < index.count; i++) {
    const c = content.subarray(i * chunkSize, Math.min(content.length, (i + 1) * chunkSize));
    if (c.every((b) => b === 0)) continue;
    const d = crypto.createHash('sha256').update(c).digest();
    index.setDigest(i, d);
    chunks.set(d.toString('hex'), Buffer.from(c));
  }
  const reader = {
    reads: 0,
    async readChunk(digest: Uint8Array): Promise<Uint8Array> {
      reader.reads++;
      const c = chunks.get(Buffer.from(digest).toString('hex'));
      if (!c) throw new Error('missing chunk');
      return c;
    },
  };
  return { index, reader, chunks };
}

/** Stores `content` chunk by chunk in a ChunkStore and returns its index. */
export async function storeContent(store: ChunkStore, content: Buffer, chunkSize: number): Promise<FixedIndex> {
  const index = new FixedIndex(content.length, chunkSize);
  for (let i = 0; i < index.count; i++) {
    const c = content.subarray(i * chunkSize, Math.min(content.length, (i + 1) * chunkSize));
    if (c.every((b) => b === 0)) continue;
    const d = crypto.createHash('sha256').update(c).digest();
    await store.put(d, c);
    index.setDigest(i, d);
  }
  return index;
}
