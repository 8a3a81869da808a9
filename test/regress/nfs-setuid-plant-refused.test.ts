/**
 * Regression: any NFS client could plant a set-uid-root program. Claiming uid 1000 with AUTH_SYS,
 * CREATE + WRITE + SETATTR uid 0 + SETATTR mode 04755 in a session folder left a
 * `-rwsr-xr-x root root` file under DATA/sessions/NAME/nfs/ (the daemon runs as root and applied
 * the client's uid and mode). Fixed: what clients create is owned on disk by the service ids
 * (65534:65534), SETATTR uid/gid is refused with NFS3ERR_PERM for non-root callers and never applied
 * on disk, and regular files never get execute or set-id bits.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SERVICE_GID, SERVICE_UID } from '../../src/nfs/datastore/ownership.js';
import { tempDir } from '../helpers/images.js';
import { startInProcess, type InProcess } from '../helpers/nfs-fixture.js';
import { authSys, RpcTestClient, sattr } from '../helpers/nfs-rpc.js';

const PERM = 1;
let dir: string;
let srv: InProcess;
let c: RpcTestClient;

beforeEach(async () => {
  dir = tempDir('rebound-nfs-plant-');
  srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'));
  c = await RpcTestClient.connect(srv.port);
});

afterEach(async () => {
  c?.close();
  await srv?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The plant sequence; returns the SETATTR uid 0 status. */
async function plant(uid: number, name: string): Promise<number> {
  c.cred = { flavor: 1, body: authSys(uid, uid) };
  const root = (await c.mount('/')).fh!;
  const s1 = await c.lookupPath(root, 'sessions/s1');
  const created = await c.createWith(s1, name, sattr({ mode: 0o755 }), 0);
  expect(created.status).toBe(0);
  const fh = Buffer.from(created.resok!.obj.handle!.data);
  expect((await c.write(fh, 0, Buffer.from('#!/bin/sh\nid\n'), 2)).status).toBe(0);
  const chown = (await c.setattr(fh, sattr({ uid: 0, gid: 0 }))).status;
  expect((await c.setattr(fh, sattr({ mode: 0o4755 }))).status).toBe(0);
  expect((await c.setattr(fh, sattr({ mode: 0o6777 }))).status).toBe(0);
  const d = await c.mkdir(s1, `${name}.d`, sattr({ mode: 0o6777, uid: 0, gid: 0 }));
  expect(d.status).toBe(0);
  return chown;
}

function expectHarmless(name: string): void {
  const f = fs.statSync(path.join(dir, 's1', 'nfs', name));
  expect(f.isFile()).toBe(true);
  expect(f.mode & 0o4000).toBe(0); // not set-uid
  expect(f.mode & 0o2000).toBe(0); // not set-gid
  expect(f.mode & 0o111).toBe(0); // not executable at all
  expect(f.uid === 0 && (f.mode & 0o111) !== 0).toBe(false);
  if (process.getuid?.() === 0) expect([f.uid, f.gid]).toEqual([SERVICE_UID, SERVICE_GID]);
  const d = fs.statSync(path.join(dir, 's1', 'nfs', `${name}.d`));
  expect(d.mode & 0o7000).toBe(0);
  if (process.getuid?.() === 0) expect([d.uid, d.gid]).toEqual([SERVICE_UID, SERVICE_GID]);
}

describe('NFS clients cannot plant set-uid programs', () => {
  it('as uid 1000: SETATTR uid 0 is NFS3ERR_PERM; the file on the gateway is neither set-uid nor executable', async () => {
    expect(await plant(1000, 'evil')).toBe(PERM);
    expectHarmless('evil');
    // Giving a file away or changing its group is refused too; its reported owner does not move.
    const s1 = await c.lookupPath((await c.mount('/')).fh!, 'sessions/s1');
    const fh = Buffer.from((await c.lookup(s1, 'evil')).resok!.object.data);
    expect((await c.setattr(fh, sattr({ uid: 1000 }))).status).toBe(PERM);
    expect((await c.setattr(fh, sattr({ gid: 1000 }))).status).toBe(PERM);
    expectHarmless('evil');
  });

  it('as uid 0: the owner change is accepted but not applied on disk; still no set-uid or execute bits', async () => {
    expect(await plant(0, 'evil-root')).toBe(0);
    expectHarmless('evil-root');
  });
});
