import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ByteReader } from '../../../src/nbd/byte-reader.js';
import {
  BHS_LENGTH,
  crc32c,
  dataIn,
  decodeLun,
  decodePdu,
  encodeLun,
  encodePdu,
  nextPdu,
  NO_DIGESTS,
  Op,
  PduError,
  RejectReason,
  scsiCommandFields,
  snAdd,
  snLess,
} from '../../../src/iscsi/pdu.js';
import { encodeText, parseBinary, parseNumber, parseText, splitText } from '../../../src/iscsi/text.js';

const limits = { ...NO_DIGESTS, maxDataLength: 8192 };

function command(cdb: number[], extra?: Buffer): Buffer {
  const b = Buffer.alloc(BHS_LENGTH);
  b[0] = Op.ScsiCommand;
  b[1] = 0x80 | 0x40;
  b.writeUInt32BE(7, 16);
  b.writeUInt32BE(512, 20);
  b.writeUInt32BE(42, 24);
  Buffer.from(cdb).copy(b, 32);
  if (extra) {
    b[4] = extra.length / 4;
  }
  return b;
}

describe('CRC32C', () => {
  it('matches the RFC 3720 B.4 test vectors', () => {
    expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });
  it('continues across pieces', () => {
    const a = Buffer.from('hello, ');
    const b = Buffer.from('iSCSI world');
    expect(crc32c(b, crc32c(a))).toBe(crc32c(Buffer.concat([a, b])));
  });
});

describe('PDU framing', () => {
  it('round-trips a PDU with padding, both digests and an AHS', () => {
    const digests = { headerDigest: true, dataDigest: true };
    const bhs = command([0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0]);
    const ahs = Buffer.alloc(8);
    ahs.writeUInt16BE(5, 0); // 1 reserved + 4 CDB bytes
    ahs[2] = 1; // extended CDB
    ahs.set([0xaa, 0xbb, 0xcc, 0xdd], 4);
    bhs[4] = 2;
    const wire = Buffer.concat(encodePdu(bhs, Buffer.from('abcde'), digests));
    // encodePdu puts the header digest after the BHS: insert the AHS by hand (the target never sends one)
    const withAhs = Buffer.concat([bhs, ahs, u32le(crc32c(ahs, crc32c(bhs))), wire.subarray(52)]);
    const r = decodePdu(withAhs, { ...digests, maxDataLength: 8192 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.consumed).toBe(withAhs.length);
    expect(r.pdu.data.toString()).toBe('abcde');
    const f = scsiCommandFields(r.pdu);
    expect(f).not.toBeInstanceOf(PduError);
    if (f instanceof PduError) return;
    expect(f.cdb.length).toBe(20);
    expect(f.cdb.subarray(16)).toEqual(Buffer.from([0xaa, 0xbb, 0xcc, 0xdd]));
    expect(f).toMatchObject({ read: true, write: false, expectedLength: 512, cmdSN: 42 });
  });
  it('asks for more bytes until the PDU is complete', () => {
    const wire = Buffer.concat(encodePdu(command([0]), Buffer.from('xyz'), NO_DIGESTS));
    expect(wire.length).toBe(48 + 4);
    expect(decodePdu(wire.subarray(0, 10), limits)).toEqual({ ok: false, need: 48 });
    expect(decodePdu(wire.subarray(0, 50), limits)).toEqual({ ok: false, need: 52 });
    expect(decodePdu(wire, limits).ok).toBe(true);
  });
  it('refuses data segments beyond MaxRecvDataSegmentLength and bad digests, without throwing', () => {
    const big = command([0]);
    big.writeUIntBE(8193, 5, 3);
    const r = decodePdu(Buffer.concat([big, Buffer.alloc(8196)]), limits);
    expect(r.ok).toBe(false);
    expect(!r.ok && 'error' in r && r.error.fatal).toBe(true);
    const digests = { headerDigest: true, dataDigest: true };
    const wire = Buffer.concat(encodePdu(command([0]), Buffer.from('data'), digests));
    wire[49] ^= 1;
    const h = decodePdu(wire, { ...digests, maxDataLength: 8192 });
    expect(!h.ok && 'error' in h && h.error.message).toBe('header digest error');
    wire[49] ^= 1;
    wire[wire.length - 1] ^= 1;
    const d = decodePdu(wire, { ...digests, maxDataLength: 8192 });
    expect(!d.ok && 'error' in d && d.error.reason).toBe(RejectReason.DataDigestError);
    expect(!d.ok && 'error' in d && d.error.fatal).toBe(false);
  });
  it('answers a lying AHS length with a typed error', () => {
    const bhs = command([0]);
    bhs[4] = 1;
    const ahs = Buffer.from([0xff, 0xff, 1, 0]);
    const r = decodePdu(Buffer.concat([bhs, ahs]), limits);
    expect(r.ok).toBe(true);
    if (r.ok) expect(scsiCommandFields(r.pdu)).toBeInstanceOf(PduError);
  });
  it('builds Data-In with phase collapse and residuals', () => {
    const b = dataIn({ itt: 5, lun: encodeLun(0), final: true, dataSN: 3, offset: 4096, status: 0, underflow: 512 });
    expect(b[0]).toBe(Op.DataIn);
    expect(b[1]).toBe(0x80 | 0x02 | 0x01);
    expect(b.readUInt32BE(36)).toBe(3);
    expect(b.readUInt32BE(40)).toBe(4096);
    expect(b.readUInt32BE(44)).toBe(512);
  });
  it('encodes LUNs in peripheral and flat addressing', () => {
    expect(decodeLun(encodeLun(3))).toBe(3);
    expect(decodeLun(encodeLun(300))).toBe(300);
    expect(encodeLun(300)[0]).toBe(0x41);
    expect(decodeLun(Buffer.from([0xc0, 0, 0, 0, 0, 0, 0, 0]))).toBe(-1);
  });
  it('compares sequence numbers in serial arithmetic', () => {
    expect(snLess(0xfffffffe, 1)).toBe(true);
    expect(snLess(1, 0xfffffffe)).toBe(false);
    expect(snLess(5, 5)).toBe(false);
    expect(snAdd(0xffffffff, 2)).toBe(1);
  });
});

describe('text keys', () => {
  it('round-trips key=value pairs', () => {
    const pairs: Array<[string, string]> = [
      ['InitiatorName', 'iqn.2026-12.org.example:host'],
      ['HeaderDigest', 'None,CRC32C'],
      ['X-com.example.Key', 'a=b'],
    ];
    const r = parseText(encodeText(pairs));
    expect(r).toEqual({ ok: true, pairs });
  });
  it('skips NUL padding but refuses unterminated, duplicate, oversized and malformed items', () => {
    expect(parseText(Buffer.from('A=1\0\0\0\0'))).toEqual({ ok: true, pairs: [['A', '1']] });
    expect(parseText(Buffer.from('A=1\0B=2'))).toMatchObject({ ok: false });
    expect(parseText(Buffer.from('A=1\0A=2\0'))).toMatchObject({ ok: false, reason: 'key A given twice' });
    expect(parseText(Buffer.from(`${'K'.repeat(64)}=1\0`))).toMatchObject({ ok: false });
    expect(parseText(Buffer.from(`K=${'v'.repeat(8193)}\0`))).toMatchObject({ ok: false });
    expect(parseText(Buffer.from('novalue\0'))).toMatchObject({ ok: false });
    expect(parseText(Buffer.from('=x\0'))).toMatchObject({ ok: false });
    expect(parseText(Buffer.from('k y=x\0'))).toMatchObject({ ok: false });
    const many = Array.from({ length: 300 }, (_, i) => `K${i}=1\0`).join('');
    expect(parseText(Buffer.from(many))).toMatchObject({ ok: false });
  });
  it('parses numbers and binary values', () => {
    expect(parseNumber('262144')).toBe(262144);
    expect(parseNumber('0x10')).toBe(16);
    expect(parseNumber('-1')).toBeUndefined();
    expect(parseNumber('12a')).toBeUndefined();
    expect(parseBinary('0x0a0b')).toEqual(Buffer.from([10, 11]));
    expect(parseBinary('0xabc')).toEqual(Buffer.from([0x0a, 0xbc]));
    expect(parseBinary('0bAQI=')).toEqual(Buffer.from([1, 2]));
    expect(parseBinary('zz')).toBeUndefined();
  });
  it('splits long text at the peer limit', () => {
    const parts = splitText(Buffer.alloc(10000, 0x41), 4096);
    expect(parts.map((p) => p.length)).toEqual([4096, 4096, 1808]);
  });
});

function u32le(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

describe('nextPdu', () => {
  const limits = { ...NO_DIGESTS, maxDataLength: 8192 };
  const nopOut = (itt: number, data: Buffer): Buffer => {
    const bhs = Buffer.alloc(BHS_LENGTH);
    bhs[0] = Op.NopOut;
    bhs[1] = 0x80;
    bhs.writeUInt32BE(itt, 16);
    return Buffer.concat(encodePdu(bhs, data, NO_DIGESTS));
  };

  it('answers buffered PDUs at once and waits for the rest of a partial one', async () => {
    const s = new PassThrough();
    const r = new ByteReader(s);
    const wire = Buffer.concat([nopOut(1, Buffer.from('abc')), nopOut(2, Buffer.alloc(0)), nopOut(3, Buffer.from('hello'))]);
    s.write(wire.subarray(0, wire.length - 4)); // the third PDU's data is cut short
    await new Promise((resolve) => setImmediate(resolve));
    const a = nextPdu(r, limits);
    const b = nextPdu(r, limits);
    expect(a).not.toBeInstanceOf(Promise);
    expect(b).not.toBeInstanceOf(Promise);
    expect((a as { itt: number }).itt).toBe(1);
    expect((a as { data: Buffer }).data.toString()).toBe('abc');
    expect((b as { itt: number }).itt).toBe(2);
    const c = nextPdu(r, limits);
    expect(c).toBeInstanceOf(Promise);
    s.write(wire.subarray(wire.length - 4));
    const third = await c;
    expect(third.itt).toBe(3);
    expect(third.data.toString()).toBe('hello');
  });

  it('throws PduError for a data segment over the limit, as readPdu rejects', async () => {
    const s = new PassThrough();
    const r = new ByteReader(s);
    s.write(nopOut(1, Buffer.alloc(8192 + 4)));
    await new Promise((resolve) => setImmediate(resolve));
    expect(() => nextPdu(r, limits)).toThrow(PduError);
  });
});
