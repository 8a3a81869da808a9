/** Pure pieces of the NFS front end: status mapping, export policy, handles, descriptors, AUTH_SYS, buffer pool. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BlockError, ReboundError } from '../../../src/errors.js';
import { HandleCodec } from '../../../src/nfs/datastore/handles.js';
import { vmdkDescriptor } from '../../../src/nfs/datastore/vmdk.js';
import { Nfs3Stat, NfsError, toNfsStat } from '../../../src/nfs/error-map.js';
import { exportPolicy } from '../../../src/nfs/policy.js';
import { parseAuthSys } from '../../../src/nfs/rpc/auth.js';
import { tempDir } from '../../helpers/images.js';
import { authSys } from '../../helpers/nfs-rpc.js';

describe('toNfsStat', () => {
  it('maps block, domain and system errors; anything else is SERVERFAULT', () => {
    expect(toNfsStat(new NfsError(Nfs3Stat.STALE, 'x'))).toBe(Nfs3Stat.STALE);
    expect(toNfsStat(new BlockError('EROFS', 'x'))).toBe(Nfs3Stat.ROFS);
    expect(toNfsStat(new BlockError('ENOSPC', 'x'))).toBe(Nfs3Stat.NOSPC);
    expect(toNfsStat(new BlockError('EIO', 'x'))).toBe(Nfs3Stat.IO);
    expect(toNfsStat(new BlockError('ESHUTDOWN', 'x'))).toBe(Nfs3Stat.JUKEBOX);
    expect(toNfsStat(new ReboundError('ERR_SESSION_NOT_FOUND', 'x'))).toBe(Nfs3Stat.STALE);
    expect(toNfsStat(new ReboundError('ERR_CHUNK_CORRUPT', 'x'))).toBe(Nfs3Stat.IO);
    expect(toNfsStat(new ReboundError('ERR_INTERNAL', 'x'))).toBe(Nfs3Stat.SERVERFAULT);
    expect(toNfsStat(Object.assign(new Error('x'), { code: 'ENOTEMPTY' }))).toBe(Nfs3Stat.NOTEMPTY);
    expect(toNfsStat(Object.assign(new Error('x'), { code: 'EDQUOT' }))).toBe(Nfs3Stat.DQUOT);
    expect(toNfsStat(new TypeError('bug'))).toBe(Nfs3Stat.SERVERFAULT);
  });
});

describe('exportPolicy', () => {
  it('allows everyone by default, else only listed addresses and subnets', () => {
    expect(exportPolicy([], false).allows('192.0.2.1')).toBe(true);
    expect(exportPolicy(['*'], true)).toMatchObject({ readOnly: true });
    const p = exportPolicy(['10.1.0.0/16', '192.0.2.7', 'fd00::/8'], false);
    expect(p.allows('10.1.200.3')).toBe(true);
    expect(p.allows('10.2.0.1')).toBe(false);
    expect(p.allows('192.0.2.7')).toBe(true);
    expect(p.allows('192.0.2.8')).toBe(false);
    expect(p.allows('fd12::1')).toBe(true);
    expect(p.allows('not an address')).toBe(false);
    expect(() => exportPolicy(['10.0.0.0/33'], false)).toThrow(/invalid NFS client/);
    expect(() => exportPolicy(['esxi1'], false)).toThrow(/invalid NFS client/);
  });
});

describe('HandleCodec', () => {
  it('keeps its secret across opens, gives stable ids, and tells foreign and bad handles apart', () => {
    const dir = tempDir('rebound-nfs-h-');
    try {
      const a = HandleCodec.open(path.join(dir, 'state'));
      const b = HandleCodec.open(path.join(dir, 'state'));
      expect(fs.statSync(path.join(dir, 'state/nfs-secret')).mode & 0o777).toBe(0o600);
      expect(a.fileid('flat:s1@1:disk0')).toBe(b.fileid('flat:s1@1:disk0'));
      expect(a.fileid('flat:s1@1:disk0')).not.toBe(a.fileid('flat:s1@2:disk0'));
      const h = a.encode({ fileid: 123n, gen: 456n });
      expect(h.length).toBe(24);
      expect(b.decode(h)).toEqual({ fileid: 123n, gen: 456n });
      const other = HandleCodec.open(path.join(dir, 'other'));
      expect(other.decode(h)).toBe('foreign');
      expect(a.decode(Buffer.alloc(24))).toBe('bad');
      expect(a.decode(Buffer.alloc(8))).toBe('bad');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('vmdkDescriptor', () => {
  it('describes a flat VMFS extent in 512-byte sectors with a geometry', () => {
    const d = vmdkDescriptor('disk0', 64 * 1024 * 1024, 'x');
    expect(d).toContain('createType="vmfs"');
    expect(d).toContain('RW 131072 VMFS "disk0-flat.vmdk"');
    expect(d).toContain('ddb.geometry.cylinders = "8"');
    expect(d).toMatch(/^CID=[0-9a-f]{8}$/m);
  });
});

describe('parseAuthSys', () => {
  it('reads stamp, machine name, uid, gid and groups; rejects malformed bodies', () => {
    expect(parseAuthSys(authSys(0, 0, 'esxi-01'))).toEqual({ stamp: 1, machine: 'esxi-01', uid: 0, gid: 0, gids: [] });
    expect(parseAuthSys(Buffer.alloc(3))).toBeUndefined();
    const long = authSys(5, 6, 'x');
    long.writeUInt32BE(1000, 4); // machine name longer than the body
    expect(parseAuthSys(long)).toBeUndefined();
  });
});
