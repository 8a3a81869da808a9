/**
 * Regress (issue 12, NFS): nfsRequirePrivilegedPort (knfsd's `secure`). With it, MNT from a source
 * port >= 1024 gets MNT3ERR_ACCES (as mountd answers) and NFS calls NFS3ERR_PERM (as knfsd's
 * fh_verify answers); NULL still answers (clients probe with it). A client bound to a port below
 * 1024 (we are root) is served. Without the option, high ports are served as before. libnfs tools
 * run as root bind a privileged port by themselves, so nfs-ls works against a secure export.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/images.js';
import { nfsUrl, startInProcess, type InProcess } from '../helpers/nfs-fixture.js';
import { MOUNT, NFS, RpcTestClient } from '../helpers/nfs-rpc.js';
import { missingPeers } from '../helpers/peers.js';
import { run } from '../helpers/run.js';
import { createLogger } from '../../src/util/log.js';

const MNT3ERR_ACCES = 13;
const NFS3ERR_PERM = 1;
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn('skipping the privileged-port cases: binding a port below 1024 needs root');

let dir: string | undefined;
let srv: InProcess | undefined;
const clients: RpcTestClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await srv?.close();
  srv = undefined;
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function start(requirePrivilegedPort: boolean): Promise<InProcess> {
  dir = tempDir('rebound-nfs-secure-');
  srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'), { requirePrivilegedPort });
  return srv;
}

async function connect(port: number, localPort?: number): Promise<RpcTestClient> {
  const c = await RpcTestClient.connect(port, '127.0.0.1', localPort);
  clients.push(c);
  return c;
}

/** Binds the first free port of 600..1023 (some may be taken by other services or tests). */
async function connectPrivileged(port: number): Promise<RpcTestClient> {
  for (let p = 600 + Math.floor(Math.random() * 200); p < 1024; p++) {
    try {
      return await connect(port, p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  throw new Error('no free port below 1024');
}

describe('regress: NFS privileged source ports', () => {
  it('a secure export refuses MNT and NFS calls from a port >= 1024 and logs it; NULL still answers', async () => {
    const s = await start(true);
    const c = await connect(s.port);
    expect(c.socket.localPort).toBeGreaterThanOrEqual(1024);
    expect(await c.call(NFS, 3, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
    expect(await c.call(MOUNT, 3, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
    expect((await c.mount('/')).status).toBe(MNT3ERR_ACCES);
    // A handle got elsewhere (another, privileged client) does not help from a high port.
    if (isRoot) {
      const good = await connectPrivileged(s.port);
      const root = (await good.mount('/')).fh!;
      expect((await c.getattr(root)).status).toBe(NFS3ERR_PERM);
      expect((await good.getattr(root)).status).toBe(0);
    }
  });

  it.skipIf(!isRoot)('a client bound to a port below 1024 mounts, looks up and reads', async () => {
    const s = await start(true);
    const c = await connectPrivileged(s.port);
    expect(c.socket.localPort).toBeLessThan(1024);
    const root = (await c.mount('/')).fh!;
    const flat = await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk');
    const r = await c.read(flat, 0, 65536);
    expect(r.status).toBe(0);
    expect(Buffer.from(r.resok!.data).equals(s.diskContent.subarray(0, 65536))).toBe(true);
  });

  it('its refusals are logged, at most 10 a minute per client, so a client refused in a loop does not fill the log', async () => {
    dir = tempDir('rebound-nfs-secure-');
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger({ level: 'debug', format: 'json', write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) });
    srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'), { requirePrivilegedPort: true, log });
    const c = await connect(srv.port);
    for (let i = 0; i < 30; i++) expect((await c.mount('/')).status).toBe(MNT3ERR_ACCES);
    const refused = lines.filter((l) => l.msg === 'mount refused: source port is not privileged');
    expect(refused).toHaveLength(10);
    expect(refused[0]).toMatchObject({ level: 'warn', peer: `127.0.0.1:${c.socket.localPort}`, setting: 'nfsRequirePrivilegedPort' });
  });

  it('without the option, a high port is served', async () => {
    const s = await start(false);
    const c = await connect(s.port);
    const root = (await c.mount('/')).fh!;
    expect((await c.getattr(root)).status).toBe(0);
  });

  it.skipIf(!isRoot || missingPeers('nfs-ls').length > 0)('nfs-ls run as root binds a privileged port and lists a secure export', async () => {
    const s = await start(true);
    const ls = await run('nfs-ls', [nfsUrl('/sessions/s1', s.port)], { timeoutMs: 30_000 });
    expect(ls.code, ls.stdout + ls.stderr).toBe(0);
    expect(ls.stdout).toContain('disk0-flat.vmdk');
  });
});
