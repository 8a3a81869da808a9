/** The attribute rules of src/nfs/datastore/ownership.ts (what a client may set, what reaches the disk). */
import { describe, expect, it } from 'vitest';
import { NfsError } from '../../../src/nfs/error-map.js';
import { checkOwnerChange, checkSetAttrs, diskMode } from '../../../src/nfs/datastore/ownership.js';

const stat = (f: () => void): number | undefined => {
  try {
    f();
    return undefined;
  } catch (err) {
    return err instanceof NfsError ? err.stat : -1;
  }
};
const sys = (uid: number) => ({ stamp: 0, machine: 'm', uid, gid: uid, gids: [] });

describe('NFS ownership rules', () => {
  it('refuses modes above 0o7777, times with nsec >= 1e9 and sizes past 2^53', () => {
    expect(stat(() => checkSetAttrs({ mode: 0o7777 }))).toBeUndefined();
    expect(stat(() => checkSetAttrs({ mode: 0o10000 }))).toBe(22);
    expect(stat(() => checkSetAttrs({ mode: 2 ** 31 }))).toBe(22);
    expect(stat(() => checkSetAttrs({ mtime: { sec: 1, nsec: 1e9 } }))).toBe(22);
    expect(stat(() => checkSetAttrs({ atime: 'server', size: 2n ** 53n }))).toBe(27);
  });

  it('keeps only rw bits of files and rwx bits of directories', () => {
    expect(diskMode(0o4755, false)).toBe(0o644);
    expect(diskMode(0o7777, false)).toBe(0o666);
    expect(diskMode(0o3777, true)).toBe(0o777);
  });

  it('lets only uid 0 change the owner or group; others may only name the current ones', () => {
    const cur = { uid: 65534, gid: 65534 };
    expect(stat(() => checkOwnerChange({ uid: 0 }, sys(0), cur))).toBeUndefined();
    expect(stat(() => checkOwnerChange({ uid: 0 }, sys(1000), cur))).toBe(1);
    expect(stat(() => checkOwnerChange({ gid: 1000 }, sys(1000), cur))).toBe(1);
    expect(stat(() => checkOwnerChange({ uid: 65534, gid: 65534 }, sys(1000), cur))).toBeUndefined();
    expect(stat(() => checkOwnerChange({ mode: 0o644 }, undefined, cur))).toBeUndefined();
  });
});
