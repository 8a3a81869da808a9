/**
 * The 512-byte footer of a fixed VHD (Microsoft "Virtual Hard Disk Image Format Specification"
 * 1.0, "Hard Disk Footer Format"): a fixed VHD is the raw disk followed by this footer, so the
 * datastore renders `<VDI>.vhd` as the session disk plus these bytes. Creator application "tap\0"
 * (XenServer's tapdisk): QEMU's vpc driver then takes the size from `current size`, not from the
 * CHS geometry (which rounds most sizes down). Everything derives from the disk's size, its UUID
 * and a fixed time, so the bytes are the same after every restart.
 */

export const VHD_FOOTER_BYTES = 512;
const VHD_EPOCH_MS = Date.UTC(2000, 0, 1);
const VHD_TYPE_FIXED = 2;

export function vhdFooter(size: number, uuid: string, createdAt: Date): Buffer {
  const f = Buffer.alloc(VHD_FOOTER_BYTES);
  f.write('conectix', 0, 'latin1');
  f.writeUInt32BE(0x00000002, 8); // features: reserved bit, always set
  f.writeUInt32BE(0x00010000, 12); // file format version 1.0
  f.writeBigUInt64BE(0xffffffffffffffffn, 16); // data offset: none (fixed disk)
  f.writeUInt32BE(Math.max(0, Math.floor((createdAt.getTime() - VHD_EPOCH_MS) / 1000)) >>> 0, 24);
  f.write('tap\0', 28, 'latin1');
  f.writeUInt32BE(0x00010003, 32); // creator version (as tapdisk writes)
  f.write('Wi2k', 36, 'latin1'); // creator host OS (the spec's two values: Wi2k, Mac )
  f.writeBigUInt64BE(BigInt(size), 40); // original size
  f.writeBigUInt64BE(BigInt(size), 48); // current size
  const { cylinders, heads, sectors } = chsGeometry(size);
  f.writeUInt16BE(cylinders, 56);
  f.writeUInt8(heads, 58);
  f.writeUInt8(sectors, 59);
  f.writeUInt32BE(VHD_TYPE_FIXED, 60);
  Buffer.from(uuid.replace(/-/g, ''), 'hex').copy(f, 68);
  let sum = 0;
  for (const b of f) sum += b; // the checksum field (64..67) is still zero
  f.writeUInt32BE(~sum >>> 0, 64);
  return f;
}

/** CHS geometry of the spec's appendix ("CHS Calculation"). */
export function chsGeometry(size: number): { cylinders: number; heads: number; sectors: number } {
  let total = Math.floor(size / 512);
  if (total > 65535 * 16 * 255) total = 65535 * 16 * 255;
  let spt: number;
  let heads: number;
  let cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(total / spt);
  } else {
    spt = 17;
    cth = Math.floor(total / spt);
    heads = Math.max(4, Math.floor((cth + 1023) / 1024));
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(total / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectors: spt };
}
