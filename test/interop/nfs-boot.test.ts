/**
 * The whole product path for an NFS hypervisor: `rebound serve --nfs 127.0.0.1:2049 --portmap
 * 127.0.0.1:111`, `rebound backup` of the guest's disk, `rebound recover --no-nbd`, and QEMU boots
 * the small Linux guest from `nfs://127.0.0.1/sessions/vm1-rec/disk0-flat.vmdk`. QEMU's libnfs
 * driver asks the portmapper on 111, so daemon, CLI and QEMU run in a private network namespace
 * (the guest helper starts `qemu-system-x86_64` from PATH; a wrapper runs it through nsenter). The
 * guest writes a marker and a payload; they land in the session's overlay and read back through
 * NFS, while the restore point stays byte for byte the guest's original disk.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, debugfsCat, describeBoot, ensureGuest, explainBoot, killAllGuests, missingGuestPeers, newMarker, payloadContent, sha256, type GuestImages } from '../helpers/guest.js';
import { tempDir } from '../helpers/images.js';
import { createNetNs, missingNetNs, type NetNs } from '../helpers/netns.js';
import { CLI } from '../helpers/daemon-process.js';
import { startDaemonInNetns, type NfsChild } from '../helpers/nfs-fixture.js';
import { missingQemuNfs } from '../helpers/nfs-peers.js';
import { hasCommand, missingPeers } from '../helpers/peers.js';

const missing = [...missingPeers('qemu-img', 'debugfs', 'nfs-ls'), ...missingGuestPeers(), ...missingQemuNfs(), ...missingNetNs()];
const fileSha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

describe.skipIf(missing.length > 0)('QEMU boots a guest from the NFS datastore', () => {
  let guest: GuestImages;
  let dir: string;
  let ns: NetNs;
  let server: NfsChild | undefined;
  let base: string;
  let baseSha: string;
  let savedPath: string | undefined;
  const marker = newMarker('nfsboot');

  beforeAll(async () => {
    guest = await ensureGuest();
    dir = tempDir('rebound-nfsboot-');
    base = path.join(dir, 'base.img');
    fs.copyFileSync(guest.disk, base);
    baseSha = fileSha(base);
    ns = await createNetNs();
    // guest.ts spawns `qemu-system-x86_64` from PATH: run it inside the namespace instead.
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    const qemu = ['/usr/bin/qemu-system-x86_64', '/usr/local/bin/qemu-system-x86_64'].find((p) => fs.existsSync(p)) ?? 'qemu-system-x86_64';
    fs.writeFileSync(path.join(bin, 'qemu-system-x86_64'), `#!/bin/sh\nexec nsenter -t ${ns.pid} -n ${qemu} "$@"\n`, { mode: 0o755 });
    savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${process.env.PATH}`;
    expect(hasCommand('qemu-system-x86_64')).toBe(true);
    const d = await startDaemonInNetns(ns, ['--data', path.join(dir, 'data'), '--nbd', 'none', '--http', '127.0.0.1:10810', '--nfs', '127.0.0.1:2049', '--portmap', '111', '--source-dir', dir]);
    server = d;
    const cli = (...a: string[]): Promise<unknown> => ns.runOk(process.execPath, [CLI, '--server', `http://${d.http}`, '--token-file', path.join(dir, 'data', 'auth', 'admin.token'), ...a], { timeoutMs: 120_000 });
    await cli('backup', 'vm1', '--disk', `disk0=${base}`);
    await cli('recover', 'vm1', '--name', 'vm1-rec', '--no-nbd');
  }, 300_000);

  async function latestPoint(): Promise<string> {
    const ls = await ns.runOk('nfs-ls', ['nfs://127.0.0.1/backups/vm1']);
    return /(\d{8}T\d{6}Z)/.exec(ls.stdout)![1]!;
  }

  afterAll(async () => {
    killAllGuests();
    if (savedPath !== undefined) process.env.PATH = savedPath;
    await server?.stop('SIGKILL');
    await ns?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the guest boots from nfs://, writes into the overlay; the base never changes', async () => {
    const drive = 'nfs://127.0.0.1/sessions/vm1-rec/disk0-flat.vmdk';
    const r = await bootGuest({ drive, action: `write:${marker}`, timeoutMs: 150_000, guest });
    console.log(`nfs-boot: ${describeBoot(r)}`);
    const why = `${explainBoot(r)}\n--- server stderr ---\n${server!.stderr()}`;
    expect(r.timedOut, why).toBe(false);
    expect(r.ioErrors, why).toEqual([]);
    expect(r.status, why).toBe('ok');
    expect(r.fields['payload.sha256'], why).toBe(sha256(payloadContent(marker)));

    // From outside, through NFS: the guest's files are there.
    const copy = path.join(dir, 'copy.img');
    await ns.runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', drive, copy], { timeoutMs: 120_000 });
    expect((await debugfsCat(copy, '/rebound/marker.txt')).toString()).toBe(`${marker}\n`);
    expect(sha256(await debugfsCat(copy, '/rebound/payload.bin'))).toBe(sha256(payloadContent(marker)));
    // The restore point is still the original disk; the base file was only read.
    const point = path.join(dir, 'point.img');
    await ns.runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nfs://127.0.0.1/backups/vm1/${await latestPoint()}/disk0-flat.vmdk`, point], { timeoutMs: 120_000 });
    expect(fileSha(point)).toBe(baseSha);
    expect(fileSha(base)).toBe(baseSha);
    await server!.stop('SIGTERM');
    server = undefined;
  }, 300_000);
});
