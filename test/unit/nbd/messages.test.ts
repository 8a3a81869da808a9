import { describe, expect, it } from 'vitest';
import {
  allocDataChunk,
  Cookie,
  clipUtf8,
  decodeReplyHeader,
  decodeRequestHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGoData,
  encodeHoleChunk,
  encodeSimpleReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeRequest,
  readU64,
  writeU64,
} from '../../../src/nbd/messages.js';
import { ChunkType, MAX_ERROR_MESSAGE_BYTES } from '../../../src/nbd/protocol.js';

describe('NBD message codec', () => {
  it('round-trips request headers, including offsets above 4 GiB', () => {
    const b = encodeRequest(1, 0, 0xfeedfacecafebeefn, 5 * 1024 ** 4 + 3, 4096);
    expect(b.length).toBe(28);
    const req = decodeRequestHeader(b)!;
    expect(req).toMatchObject({ flags: 1, type: 0, offset: 5 * 1024 ** 4 + 3, length: 4096 });
    expect(req.cookie.value).toBe(0xfeedfacecafebeefn);
    expect(Cookie.of(0xfeedfacecafebeefn)).toEqual(req.cookie);
    // The reply carries the client's 8 bytes back unchanged, high bits included.
    expect(decodeReplyHeader(encodeSimpleReply(0, req.cookie))!.cookie).toBe(0xfeedfacecafebeefn);
    expect(decodeReplyHeader(allocDataChunk(req.cookie, 0, 1, true).buf)!.cookie).toBe(0xfeedfacecafebeefn);
  });
  it('flags offsets beyond 2^53 and bad magics', () => {
    const b = encodeRequest(0, 0, 1n, 0, 1);
    b.writeUInt32BE(0xffffffff, 16);
    expect(decodeRequestHeader(b)!.offset).toBe(-1);
    b.writeUInt32BE(0x12345678, 0);
    expect(decodeRequestHeader(b)).toBeUndefined();
  });
  it('encodes info replies with the exact lengths libnbd checks', () => {
    expect(encodeInfoExport(1, 3).length).toBe(12);
    expect(encodeInfoBlockSize(1, 4096, 1 << 25).length).toBe(14);
    expect(encodeExportNameReply(10, 1, true).length).toBe(10);
    expect(encodeExportNameReply(10, 1, false).length).toBe(134);
  });
  it('builds data, hole, error and block-status chunks with correct headers', () => {
    const { buf, data } = allocDataChunk(Cookie.of(9n), 4096, 100, true);
    expect(data.length).toBe(100);
    const h = decodeReplyHeader(buf)!;
    expect(h).toMatchObject({ structured: true, flags: 1, type: ChunkType.OFFSET_DATA, cookie: 9n, length: 108 });
    expect(readU64(buf, 20)).toBe(4096);
    const hole = encodeHoleChunk(Cookie.of(1n), 8192, 512, false);
    expect(decodeReplyHeader(hole)).toMatchObject({ flags: 0, type: ChunkType.OFFSET_HOLE, length: 12 });
    const err = encodeErrorChunk(Cookie.of(1n), 22, 'x'.repeat(5000));
    expect(err.length).toBe(20 + 6 + MAX_ERROR_MESSAGE_BYTES);
    const bs = encodeBlockStatusChunk(Cookie.of(1n), 1, [{ length: 512, flags: 3 }, { length: 1024, flags: 0 }], true);
    expect(decodeReplyHeader(bs)!.length).toBe(4 + 16);
  });
  it('clips UTF-8 at a character boundary', () => {
    const s = 'é'.repeat(10); // 2 bytes each
    expect(clipUtf8(s, 5).toString()).toBe('éé');
  });
  it('writes and reads u64 as numbers', () => {
    const b = Buffer.alloc(8);
    writeU64(b, Number.MAX_SAFE_INTEGER, 0);
    expect(readU64(b, 0)).toBe(Number.MAX_SAFE_INTEGER);
    expect(encodeGoData('ab', [1, 3]).length).toBe(4 + 2 + 2 + 4);
  });
});
