/**
 * Verification boots end to end (docs/verification.md), against real QEMU (TCG) and a guest that
 * boots from its own disk through SYSLINUX (tools/guest/build-disk.sh):
 *  - three restore points verified at once with verifyConcurrency 2: the good point boots (serial
 *    marker, HTTP and banner ports, a PNG screenshot the test decodes); the same disk with its
 *    kernel zeroed fails with the bootloader's error in the serial tail, long before its timeout;
 *    a good guest asked for a port it never opens fails with that reason. Never more than two
 *    QEMU processes (sampled from /proc, and from the results' QEMU start/exit times); the points
 *    are unchanged, no run directory (overlay) or pin is left;
 *  - a daemon killed with SIGKILL mid-boot: the next start kills the QEMU it left and removes the
 *    overlay; the point is not pinned;
 *  - a point backed up with a Proxmox .conf asking for OVMF, q35 and virtio-scsi boots that way
 *    (UEFI through the disk's systemd-boot; the same disk boots SYSLINUX under BIOS), once by
 *    verifyAfterBackup and once from the CLI with a probe script that fetches the guest's page.
 * Boots are few and small (192 MiB, one per case); loops are bounded by counts.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobInfo } from '../../src/api/jobs.js';
import type { BootVerification } from '../../src/verify/result.js';
import { judgeScreen } from '../../src/verify/screen.js';
import { ensureBootGuest, missingBootGuestPeers, type BootGuest } from '../helpers/boot-guest.js';
import { CLI, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { tempDir } from '../helpers/images.js';
import { runOk } from '../helpers/run.js';

const missing = missingBootGuestPeers();
const MEMORY = 192 * 1024 * 1024;

/** QEMU processes whose command line names `dir` (the daemon's data directory). */
function qemuUnder(dir: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'latin1');
      if (cmd.startsWith('qemu-system') && cmd.includes(dir + '/')) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

/** sha256 of every file of a restore point's directory in the repository. */
function pointDigest(data: string, vm: string, point: string): string {
  const dir = path.join(data, 'repo', 'vms', vm, point);
  const h = crypto.createHash('sha256');
  for (const f of fs.readdirSync(dir, { recursive: true }).map(String).sort()) {
    const p = path.join(dir, f);
    if (fs.statSync(p).isFile()) h.update(f).update(fs.readFileSync(p));
  }
  return h.digest('hex');
}

describe.skipIf(missing.length > 0)('verification boots', () => {
  let guest: BootGuest;
  let dir: string;
  const daemons: DaemonProcess[] = [];

  beforeAll(async () => {
    guest = await ensureBootGuest();
    dir = tempDir('rebound-verifyboot-');
  }, 300_000);
  afterAll(async () => {
    for (const d of daemons) await d.stop('SIGKILL');
    for (const pid of qemuUnder(dir ?? '/nonexistent')) process.kill(pid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const start = async (data: string, extra: string[] = []): Promise<DaemonProcess> => {
    const d = await startDaemonProcess(['--data', data, '--nbd', 'none', '--http', '127.0.0.1:0', '--verify-accel', 'tcg', '--source-dir', path.dirname(guest.disk), ...extra], { timeoutMs: 120_000 });
    daemons.push(d);
    return d;
  };
  const api = (d: DaemonProcess) => async <T>(method: string, p: string, body?: unknown): Promise<{ status: number; json: T }> => {
    const res = await fetch(`${d.url}${p}`, { method, headers: { ...d.auth, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    return { status: res.status, json: (await res.json()) as T };
  };
  const backup = async (d: DaemonProcess, vm: string, disk: string): Promise<string> => {
    const r = await runOk(process.execPath, [CLI, '--server', d.url!, '--token-file', d.tokenFile, 'backup', vm, '--disk', `sda=${disk}`, '--json'], { timeoutMs: 120_000 });
    return (JSON.parse(r.stdout) as { result: { id: string } }).result.id;
  };

  it('verifies three points at once, two at a time: booted, broken kernel, port never opened', async () => {
    const data = path.join(dir, 'data');
    const d = await start(data, ['--verify-concurrency', '2']);
    const call = api(d);
    const good = await backup(d, 'web', guest.disk);
    const broken = await backup(d, 'web', guest.brokenDisk);
    const other = await backup(d, 'web2', guest.disk);
    const before = { good: pointDigest(data, 'web', good), broken: pointDigest(data, 'web', broken), other: pointDigest(data, 'web2', other) };

    const marker = guest.marker;
    // The port that never opens fails 30 s after the guest's marker (tcpGraceSeconds), however slow
    // the boot; the ports that do open answered within a second of it in every run seen. It goes
    // first, so the other two run (one after the other, in the second slot) while it waits.
    const asks = [
      { vm: 'web2', point: other, memory: MEMORY, expectSerial: marker, tcp: [81], tcpGraceSeconds: 30, timeoutSeconds: 900 },
      { vm: 'web', point: broken, memory: MEMORY, expectSerial: marker, tcp: [guest.httpPort], timeoutSeconds: 900 },
      { vm: 'web', point: good, memory: MEMORY, expectSerial: marker, tcp: [guest.httpPort, guest.bannerPort], keepScreenshot: true, timeoutSeconds: 900 },
    ];
    const jobs: JobInfo[] = [];
    for (const a of asks) {
      const r = await call<JobInfo>('POST', '/v1/boot-verifications', a);
      expect(r.status).toBe(202);
      jobs.push(r.json);
    }
    // Sample the QEMU processes until every job is done (bounded by count, not time).
    let most = 0;
    let done: JobInfo[] = [];
    for (let i = 0; i < 20_000; i++) {
      most = Math.max(most, qemuUnder(data).length);
      done = await Promise.all(jobs.map(async (j) => (await call<JobInfo>('GET', `/v1/jobs/${j.id}`)).json));
      if (done.every((j) => j.state !== 'running')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(done.map((j) => j.state)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    const [noPort, bad, ok] = done.map((j) => j.result as BootVerification) as [BootVerification, BootVerification, BootVerification];
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(2);
    // From the results: at no QEMU start were two others running.
    const spans = [ok, bad, noPort].map((r) => ({ from: Date.parse(r.qemu.startedAt!), to: Date.parse(r.qemu.exitedAt!) }));
    for (const s of spans) expect(spans.filter((o) => o.from <= s.from && s.from < o.to).length).toBeLessThanOrEqual(2);

    // The good point booted: every signal, and a screenshot that decodes to a screen with content.
    expect(ok.reasons).toEqual([]);
    expect(ok.verdict).toBe('booted');
    expect(ok.signals.serial.matched).toContain(marker);
    expect(ok.signals.tcp.map((t) => [t.port, t.answered])).toEqual([[80, true], [7, true]]);
    expect(ok.machine).toMatchObject({ accel: 'tcg', machine: 'pc', firmware: 'bios', bus: 'virtio', memoryMiB: 192, configFile: null });
    expect(ok.machine.guessed).toEqual(expect.arrayContaining(['machine', 'firmware', 'bus']));
    const shot = await fetch(`${d.url}/v1/vms/web/points/${good}/boot-verifications/${ok.id}/screenshot`, { headers: d.auth });
    expect(shot.headers.get('content-type')).toBe('image/png');
    const png = PNG.sync.read(Buffer.from(await shot.arrayBuffer()));
    expect(png.width).toBeGreaterThan(0);
    const rgb = Buffer.alloc(png.width * png.height * 3);
    for (let i = 0; i < png.width * png.height; i++) png.data.copy(rgb, i * 3, i * 4, i * 4 + 3);
    expect(judgeScreen({ width: png.width, height: png.height, rgb })).toMatchObject({ ok: true, blank: false, flat: false });

    // The zeroed kernel: the bootloader's failure, in the serial tail, found long before the timeout.
    expect(bad.ok).toBe(false);
    expect(bad.signals.serial.failure).toMatch(/Booting kernel failed/);
    expect(bad.serialTail.join('\n')).toMatch(/SYSLINUX[\s\S]*Booting kernel failed/);
    expect(bad.reasons.join('\n')).toMatch(/boot failure/);
    expect(bad.reasons.join('\n')).not.toMatch(/timed out/);
    expect(bad.durationMs).toBeLessThan(900_000);

    // A guest that boots but never opens the port: that is the reason, the rest was fine.
    expect(noPort.ok).toBe(false);
    expect(noPort.signals.serial.matched).toContain(marker);
    expect(noPort.signals.serial.failure).toBeNull();
    expect(noPort.reasons).toEqual(expect.arrayContaining([expect.stringMatching(/TCP port 81 never answered/)]));
    expect(noPort.reasons).toEqual([expect.stringMatching(/^TCP port 81 never answered within 30 s of the serial pattern/)]);
    expect(noPort.durationMs).toBeLessThan(900_000);

    // Stored with the points, shown by show and list; points unchanged; nothing left behind.
    for (const [vm, point, r] of [['web', good, ok], ['web', broken, bad], ['web2', other, noPort]] as const) {
      const stored = await call<{ results: BootVerification[] }>('GET', `/v1/vms/${vm}/points/${point}/boot-verifications`);
      expect(stored.json.results.map((x) => x.id)).toEqual([r.id]);
      const p = await call<{ pinned: boolean }>('GET', `/v1/vms/${vm}/points/${point}`);
      expect(p.json.pinned).toBe(false);
    }
    expect({ good: pointDigest(data, 'web', good), broken: pointDigest(data, 'web', broken), other: pointDigest(data, 'web2', other) }).toEqual(before);
    expect(fs.readdirSync(path.join(data, 'verify', 'runs'))).toEqual([]);
    expect(qemuUnder(data)).toEqual([]);
    const rb = (...a: string[]) => runOk(process.execPath, [CLI, '--server', d.url!, '--token-file', d.tokenFile, ...a]);
    expect((await rb('show', `web@${good}`)).stdout).toMatch(/boot verified: booted /);
    const list = (await rb('list', 'web')).stdout;
    expect(list).toMatch(new RegExp(`${good}.*booted`));
    expect(list).toMatch(new RegExp(`${broken}.*FAILED`));
  }, 900_000);

  it('after a kill -9 of the daemon mid-boot, the restart stops the QEMU and removes the overlay', async () => {
    const data = path.join(dir, 'data-kill');
    const d = await start(data);
    const call = api(d);
    const point = await backup(d, 'vm', guest.disk);
    const job = (await call<JobInfo>('POST', '/v1/boot-verifications', { vm: 'vm', point, memory: MEMORY, expectSerial: 'never-printed', timeoutSeconds: 3600 })).json;
    let pid: number | null = null;
    for (let i = 0; i < 2000 && pid === null; i++) {
      const j = (await call<JobInfo>('GET', `/v1/jobs/${job.id}`)).json;
      if ((j.progress as { phase?: string } | null)?.phase === 'booting') pid = (j.progress as { qemuPid: number }).qemuPid;
      else await new Promise((r) => setTimeout(r, 50));
    }
    expect(pid).not.toBeNull();
    const runs = path.join(data, 'verify', 'runs');
    const [run] = fs.readdirSync(runs);
    expect(fs.readdirSync(path.join(runs, run!, 'overlays'))).toEqual(['sda']);
    await d.stop('SIGKILL');
    expect(qemuUnder(data)).toEqual([pid]); // QEMU outlived the daemon

    const again = await start(data);
    expect(again.stderr() + again.stdout()).toMatch(/cleaned up an interrupted verification boot/);
    expect(qemuUnder(data)).toEqual([]);
    expect(fs.readdirSync(runs)).toEqual([]);
    const p = await api(again)<{ pinned: boolean }>('GET', `/v1/vms/vm/points/${point}`);
    expect(p.json.pinned).toBe(false);
  }, 300_000);

  it('refuses a probe script from an operator token or from outside verifyScriptDirs', async () => {
    const d = daemons[0]!;
    const call = api(d);
    const script = path.join(dir, 'probe.sh');
    fs.writeFileSync(script, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    const outside = await call<{ error: { code: string } }>('POST', '/v1/boot-verifications', { vm: 'web', script });
    expect([outside.status, outside.json.error.code]).toEqual([403, 'ERR_PATH_NOT_ALLOWED']);
    const tok = await runOk(process.execPath, [CLI, '--server', d.url!, '--token-file', d.tokenFile, 'token', 'create', '--name', 'op', '--role', 'operator', '--json']);
    const op = (JSON.parse(tok.stdout) as { token: string }).token;
    const res = await fetch(`${d.url}/v1/boot-verifications`, { method: 'POST', headers: { authorization: `Bearer ${op}`, 'content-type': 'application/json' }, body: JSON.stringify({ vm: 'web', script }) });
    expect([res.status, ((await res.json()) as { error: { code: string } }).error.code]).toEqual([403, 'ERR_FORBIDDEN']);
  });

  it('boots a point the way its stored Proxmox configuration says (UEFI, q35, virtio-scsi): after its backup, and with a probe script', async () => {
    const confDir = path.join(dir, 'pve');
    fs.mkdirSync(confDir);
    const conf = path.join(confDir, '100.conf');
    fs.writeFileSync(conf, ['bios: ovmf', 'boot: order=scsi0', 'machine: q35', 'memory: 192', 'name: web', 'net0: virtio=BC:24:11:00:00:01,bridge=vmbr0', 'scsihw: virtio-scsi-pci', 'scsi0: local-lvm:vm-100-disk-0,size=64M', ''].join('\n'));
    // The probe fetches the guest's page through the forwarded port the daemon passes it.
    const probe = path.join(confDir, 'probe.sh');
    fs.writeFileSync(probe, '#!/bin/bash\nset -e\nexec 3<>"/dev/tcp/$REBOUND_HOST/$REBOUND_TCP_80"\nprintf \'GET / HTTP/1.0\\r\\n\\r\\n\' >&3\ngrep -q "rebound boot guest" <&3\n', { mode: 0o755 });
    const data = path.join(dir, 'data-uefi');
    const d = await start(data, ['--source-dir', confDir, '--verify-after-backup', '--verify-expect-serial', guest.marker, '--verify-tcp-port', String(guest.httpPort), '--verify-script-dir', confDir]);
    const call = api(d);
    const rb = (...a: string[]) => runOk(process.execPath, [CLI, '--server', d.url!, '--token-file', d.tokenFile, ...a], { timeoutMs: 900_000 });
    const point = (JSON.parse((await rb('backup', 'pve-100', '--disk', `scsi0=${guest.disk}`, '--config', conf, '--json')).stdout) as { result: { id: string } }).result.id;
    const machine = { machine: 'q35', firmware: 'uefi', bus: 'scsi', nic: 'virtio-net-pci', memoryMiB: 192, configFile: '100.conf', guessed: [] };

    // verifyAfterBackup: the new point is booted with the verify* defaults (bounded by count).
    let stored: BootVerification[] = [];
    for (let i = 0; i < 20_000 && stored.length === 0; i++) {
      stored = (await call<{ results: BootVerification[] }>('GET', `/v1/vms/pve-100/points/${point}/boot-verifications`)).json.results;
      if (stored.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ trigger: 'after-backup', ok: true, reasons: [], machine });
    expect(stored[0]!.signals.tcp.map((t) => [t.port, t.answered])).toEqual([[guest.httpPort, true]]);

    // Through the CLI, which follows the job to the verdict (exit 0 only when booted), with a probe script.
    const r = JSON.parse((await rb('verify', `pve-100@${point}`, '--boot', '--expect-serial', guest.marker, '--tcp', String(guest.httpPort), '--script', probe, '--timeout', '900', '--json')).stdout) as BootVerification;
    expect(r).toMatchObject({ trigger: 'request', ok: true, reasons: [], machine });
    expect(r.signals.serial.matched).toContain(guest.marker);
    expect(r.signals.script).toMatchObject({ file: probe, exitCode: 0 });
    expect(qemuUnder(data)).toEqual([]);
  }, 900_000);
});
