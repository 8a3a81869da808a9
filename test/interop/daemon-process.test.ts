/**
 * The real daemon process: the README's quick start (`serve --demo`), a real client against it,
 * the CLI as a separate process, the data directory lock across processes, graceful SIGTERM, and
 * recovery from a SIGKILL (stale lock and stale Unix socket).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, startDaemonProcess } from '../helpers/daemon-process.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const missing = missingPeers('qemu-img', 'qemu-io', 'nbdinfo');

describe.skipIf(missing.length > 0)('rebound serve as a process', () => {
  it('quick start: --demo backs up a demo disk and serves it recovered (writable) and as a read-only restore point', async () => {
    const data = path.join(dir, 'demo-data');
    const d = await startDaemonProcess(['--demo', '--data', data, '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0']);
    try {
      expect(d.stdout()).toMatch(/recovered\s+64 MiB\s+read-write\s+nbd:\/\//);
      expect(d.stdout()).toMatch(/demo@latest\/disk0\s+64 MiB\s+read-only/);
      expect(d.stdout()).toMatch(/scratch\s+64 MiB\s+read-write/);
      const image = path.join(data, 'demo', 'demo-disk.img');
      const info = await runOk('qemu-img', ['info', '--output=json', `nbd://${d.nbd}/recovered`]);
      expect(JSON.parse(info.stdout)['virtual-size']).toBe(64 * 1024 * 1024);
      const cmp = await run('qemu-img', ['compare', `nbd://${d.nbd}/demo@latest/disk0`, image]);
      expect(cmp.stdout).toContain('Images are identical');
      const ro = await run('nbdinfo', ['--is', 'read-only', `nbd://${d.nbd}/demo@latest/disk0`]);
      expect(ro.code).toBe(0);
      // The recovered VM's disk takes writes; the restore point does not change.
      await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 1M 64k', `nbd://${d.nbd}/recovered`]);
      const changed = await run('qemu-img', ['compare', `nbd://${d.nbd}/recovered`, image]);
      expect(changed.stdout).toContain('Content mismatch');
      const still = await run('qemu-img', ['compare', `nbd://${d.nbd}/demo@latest/disk0`, image]);
      expect(still.stdout).toContain('Images are identical');
      const exps = await runOk(process.execPath, [CLI, '--server', `http://${d.http}`, '--token-file', d.tokenFile, 'exports', '--json']);
      expect(JSON.parse(exps.stdout).exports.map((e: { name: string }) => e.name).sort()).toEqual(
        expect.arrayContaining(['recovered', 'scratch', 'demo@latest/disk0']),
      );

      const second = await run(process.execPath, [CLI, 'serve', '--data', data, '--nbd', '127.0.0.1:0', '--http', 'off']);
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(/in use by another rebound daemon \(pid \d+, API http:\/\//);
    } finally {
      expect(await d.stop('SIGTERM')).toBe(0);
    }
    expect(d.stderr()).toContain('stopped');
    expect(fs.existsSync(path.join(data, 'daemon.lock'))).toBe(false);
  });

  it('comes back after SIGKILL: stale lock and stale Unix socket are taken over', async () => {
    const data = path.join(dir, 'kill-data');
    const sock = path.join(dir, 'nbd.sock');
    const args = ['--data', data, '--nbd', 'none', '--nbd-socket', sock, '--http', 'off', '--export', 'm=memory:1M'];
    const first = await startDaemonProcess(args);
    await first.stop('SIGKILL');
    expect(fs.existsSync(path.join(data, 'daemon.lock'))).toBe(true);
    expect(fs.existsSync(sock)).toBe(true);
    const again = await startDaemonProcess(args);
    try {
      const size = await runOk('nbdinfo', ['--size', `nbd+unix:///m?socket=${sock}`]);
      expect(size.stdout.trim()).toBe(String(1024 * 1024));
    } finally {
      expect(await again.stop('SIGINT')).toBe(0);
    }
  });
});
