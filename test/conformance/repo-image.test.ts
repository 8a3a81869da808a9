/** The conformance suite over RepoImage: in-memory chunks, a real ChunkStore, and through the cache. */
import fs from 'node:fs';
import path from 'node:path';
import { ChunkCache } from '../../src/blockdev/base/chunk-cache.js';
import { RepoImage } from '../../src/blockdev/base/repo-image.js';
import { ChunkStore } from '../../src/repo/chunk-store.js';
import { DEFLATE } from '../../src/repo/codec.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { memoryChunks, storeContent } from '../helpers/repo-fixture.js';
import { blockDeviceSuite } from './blockdev-suite.js';

const SIZE = 16 * 1024 * 1024;

function content(size = SIZE): Buffer {
  const dir = tempDir();
  const c = makeImage(path.join(dir, 'x.img'), standardLayout(size));
  fs.rmSync(dir, { recursive: true, force: true });
  return c;
}

blockDeviceSuite('repo-image (in-memory chunks, 1 MiB)', async () => {
  const expected = content();
  const { index, reader } = memoryChunks(expected, 1024 * 1024);
  return { device: new RepoImage(index, reader), expected };
});

blockDeviceSuite('repo-image (chunk store + cache, 256 KiB, size not a multiple of the chunk size)', async () => {
  const dir = tempDir();
  const expected = content(SIZE - 4096 * 3);
  const store = new ChunkStore(path.join(dir, 'chunks'), DEFLATE);
  const index = await storeContent(store, expected, 256 * 1024);
  return {
    device: new RepoImage(index, new ChunkCache(store, 8 * 1024 * 1024)),
    expected,
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
});
