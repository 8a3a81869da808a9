/**
 * One publication point: NBD, NFS and FUSE render the same catalog in the real daemon. A session
 * recovered with `--no-nfs --no-fuse` is listed by NBD (nbdinfo --list) and by neither the NFS
 * datastore (nfs-ls) nor the FUSE tree; a session published everywhere shows in all three, and
 * `rebound discard` removes it from every front end in one step.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/cli.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { nfsUrl } from '../helpers/nfs-fixture.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const MiB = 1024 * 1024;
const missing = missingPeers('nbdinfo', 'nfs-ls', 'fusermount');
const noFuse = !fs.existsSync('/dev/fuse') || process.getuid?.() !== 0;

describe.skipIf(missing.length > 0 || noFuse)('one catalog behind NBD, NFS and FUSE', () => {
  let dir: string;
  let daemon: DaemonProcess | undefined;
  let mnt: string;
  let sock: string;
  const rb = async (...a: string[]) => {
    const r = await cli(['--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, ...a]);
    expect(r.code, r.stderr).toBe(0);
    return r;
  };
  const nfsPort = (): number => Number(/NFS: datastore at 127\.0\.0\.1:(\d+)/.exec(daemon!.stdout())?.[1]);
  const nbdNames = async (): Promise<string[]> => {
    const r = await runOk('nbdinfo', ['--list', '--json', `nbd+unix://?socket=${sock}`]);
    return (JSON.parse(r.stdout) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']).sort();
  };
  const nfsSessions = async (): Promise<string[]> => {
    const r = await run('nfs-ls', [nfsUrl('/sessions', nfsPort())]);
    return r.stdout.split('\n').map((l) => l.trim().split(/\s+/).at(-1)!).filter((n) => n && n !== '.' && n !== '..').sort();
  };
  const fuseSessions = (): string[] => fs.readdirSync(path.join(mnt, 'sessions')).sort();

  beforeAll(async () => {
    dir = tempDir('rebound-catalog-');
    mnt = path.join(dir, 'fuse');
    sock = path.join(dir, 'nbd.sock');
    fs.mkdirSync(mnt);
    makeImage(path.join(dir, 'disk.raw'), standardLayout(8 * MiB));
    daemon = await startDaemonProcess(['--data', path.join(dir, 'data'), '--nbd', 'none', '--nbd-socket', sock, '--http', '127.0.0.1:0', '--nfs', '127.0.0.1:0', '--portmap', 'off', '--fuse', mnt]);
    await rb('backup', 'web1', '--disk', `disk0=${path.join(dir, 'disk.raw')}`);
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop('SIGTERM');
    await run('fusermount', ['-uz', mnt]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a session published on NBD only is not listed by NFS or FUSE', async () => {
    await rb('recover', 'web1', '--name', 'nbdonly', '--no-nfs', '--no-fuse', '--json');
    expect(await nbdNames()).toContain('session/nbdonly/disk0');
    expect(await nfsSessions()).not.toContain('nbdonly');
    expect(fuseSessions()).not.toContain('nbdonly');
    // Restore points are on all three.
    expect((await nbdNames()).filter((n) => n.startsWith('web1@'))).toHaveLength(2); // the point and web1@latest
    expect((await run('nfs-ls', [nfsUrl('/backups', nfsPort())])).stdout).toMatch(/web1/);
    expect(fs.readdirSync(path.join(mnt, 'vms'))).toEqual(['web1']);
  });

  it('discard removes a session from every front end in one step', async () => {
    await rb('recover', 'web1', '--name', 'everywhere');
    expect(await nbdNames()).toContain('session/everywhere/disk0');
    expect(await nfsSessions()).toContain('everywhere');
    expect(fuseSessions()).toContain('everywhere');
    // The same bytes behind each front end.
    const viaFuse = fs.readFileSync(path.join(mnt, 'sessions', 'everywhere', 'disk0.raw'));
    const copy = path.join(dir, 'via-nfs.raw');
    await runOk('nfs-cp', [nfsUrl('/sessions/everywhere/disk0-flat.vmdk', nfsPort()), copy]);
    expect(viaFuse.equals(fs.readFileSync(path.join(dir, 'disk.raw')))).toBe(true);
    expect(fs.readFileSync(copy).equals(viaFuse)).toBe(true);

    await rb('discard', 'everywhere');
    expect(await nbdNames()).not.toContain('session/everywhere/disk0');
    expect(await nfsSessions()).not.toContain('everywhere');
    expect(fuseSessions()).not.toContain('everywhere');
  });
});
