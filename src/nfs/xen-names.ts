/**
 * The catalog rendered as XenServer / XCP-ng NFS storage repositories (docs/xenserver.md):
 *
 *   /xen/<SR-UUID>/<VDI-UUID>.raw   one SR per recovery session, one raw VDI per disk
 *   /xen/<SR-UUID>/<VDI-UUID>.vhd   instead, with nfsXenFormat=vhd: the disk plus a fixed-VHD footer
 *
 * XenServer's storage manager (NFSSR/FileSR) mounts `<server>:/xen/<SR-UUID>` and takes every
 * `<uuid>.raw` or `<uuid>.vhd` in it as a VDI. The UUIDs are name-based (RFC 9562 version 5, SHA-1)
 * in rebound's own namespace, from the session's name and creation time (and the disk's name for a
 * VDI): stable across daemon restarts, and a session re-created under the same name is a new SR.
 *
 *   SR  = uuid5(REBOUND_XEN_NAMESPACE, "sr:NAME@CREATED_MS")
 *   VDI = uuid5(REBOUND_XEN_NAMESPACE, "vdi:NAME@CREATED_MS:DISK")
 */
import crypto from 'node:crypto';

export const XEN_DIR = 'xen';
export const REBOUND_XEN_NAMESPACE = '6f1d2c4e-8a53-4b7e-9c0d-5e2f3a1b7c90';

export type XenFormat = 'raw' | 'vhd' | 'off';
export const XEN_FORMATS: readonly XenFormat[] = ['raw', 'vhd', 'off'];

/** Name-based UUID, version 5 (SHA-1), lowercase text form. */
export function uuid5(namespace: string, name: string): string {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const h = crypto.createHash('sha1').update(ns).update(name, 'utf8').digest().subarray(0, 16);
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export const xenSrUuid = (session: string, createdAt: Date): string => uuid5(REBOUND_XEN_NAMESPACE, `sr:${session}@${createdAt.getTime()}`);

export const xenVdiUuid = (session: string, createdAt: Date, disk: string): string =>
  uuid5(REBOUND_XEN_NAMESPACE, `vdi:${session}@${createdAt.getTime()}:${disk}`);

/** The VDI file's name in its SR folder. */
export const xenVdiFile = (session: string, createdAt: Date, disk: string, format: 'raw' | 'vhd'): string =>
  `${xenVdiUuid(session, createdAt, disk)}.${format}`;

/** The SR's path on the server (what `xe sr-introduce`/`pbd-create` get as serverpath + uuid). */
export const xenSrPath = (session: string, createdAt: Date): string => `/${XEN_DIR}/${xenSrUuid(session, createdAt)}`;
