/**
 * ESXi descriptor for a flat disk (`<disk>.vmdk` next to `<disk>-flat.vmdk`): createType "vmfs",
 * one RW extent of the disk's size in 512-byte sectors, the data file named relative to the
 * descriptor (VMware resolves it in the same folder). QEMU's vmdk driver reads it too.
 */
import crypto from 'node:crypto';

export function flatName(disk: string): string {
  return `${disk}-flat.vmdk`;
}

export function descriptorName(disk: string): string {
  return `${disk}.vmdk`;
}

export function vmdkDescriptor(disk: string, size: number, identity: string): string {
  const sectors = Math.floor(size / 512);
  const heads = 255;
  const perTrack = 63;
  const cylinders = Math.max(1, Math.min(65535, Math.floor(sectors / (heads * perTrack))));
  const cid = crypto.createHash('sha256').update(identity).digest().readUInt32BE(0).toString(16).padStart(8, '0');
  return [
    '# Disk DescriptorFile',
    'version=1',
    'encoding="UTF-8"',
    `CID=${cid}`,
    'parentCID=ffffffff',
    'createType="vmfs"',
    '',
    '# Extent description',
    `RW ${sectors} VMFS "${flatName(disk)}"`,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    'ddb.adapterType = "lsilogic"',
    `ddb.geometry.cylinders = "${cylinders}"`,
    `ddb.geometry.heads = "${heads}"`,
    `ddb.geometry.sectors = "${perTrack}"`,
    'ddb.thinProvisioned = "1"',
    'ddb.virtualHWVersion = "13"',
    '',
  ].join('\n');
}
