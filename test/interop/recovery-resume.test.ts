/**
 * A migration survives `kill -9` of the daemon: the restarted daemon brings the session back and
 * resumes the copy from its persisted cursor (not from zero), re-copying what the VM wrote; after
 * the switch the target equals the session's disk.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { patternBuffer, tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';

const missing = missingPeers('qemu-io');
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

describe.skipIf(missing.length > 0)('migration resume after SIGKILL', () => {
  const dir = tempDir('rebound-resume-');
  let daemon: DaemonProcess | undefined;
  afterAll(async () => {
    await daemon?.stop('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const api = async <T>(method: string, url: string, body?: unknown): Promise<T> => {
    const r = await fetch(`http://${daemon!.http}${url}`, { method, headers: { ...daemon!.auth, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    const j = (await r.json()) as T;
    if (!r.ok) throw new Error(JSON.stringify(j));
    return j;
  };
  type Mig = { state: string; doneBytes: number; copiedBytes: number };
  const migration = async (): Promise<Mig> => (await api<{ disks: Array<{ migration: Mig }> }>('GET', '/v1/sessions/db')).disks[0]!.migration;
  const record = (): { cursor: number; copiedBytes: number; state: string } =>
    JSON.parse(fs.readFileSync(path.join(dir, 'data/sessions/db/session.json'), 'utf8')).disks[0].migration ?? { cursor: 0, copiedBytes: 0, state: 'none' };

  it('resumes from the persisted cursor and converges', async () => {
    const data = path.join(dir, 'data');
    const src = path.join(dir, 'src.img');
    fs.writeFileSync(src, patternBuffer(0, SIZE));
    const args = ['--data', data, '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0'];
    daemon = await startDaemonProcess(args);
    await runOk(process.execPath, [CLI, '--server', `http://${daemon.http}`, '--token-file', daemon.tokenFile, 'backup', 'db', '--disk', `disk0=${src}`]);
    await api('POST', '/v1/sessions', { vm: 'db' });
    const nbd = `nbd://${daemon.nbd}/session/db/disk0`;
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 40M 1M', nbd]);
    const target = path.join(dir, 'prod.raw');
    await api('POST', '/v1/sessions/db/migrate', { to: target, rate: 16 * MiB });
    // Let it copy a part, then kill the daemon without warning.
    const deadline = Date.now() + 20_000;
    while (record().cursor < 16 * MiB && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await daemon.stop('SIGKILL')).toBe(null);
    const atKill = record();
    expect(atKill.cursor).toBeGreaterThanOrEqual(16 * MiB);
    expect(atKill.cursor).toBeLessThan(SIZE);

    daemon = await startDaemonProcess(args);
    const nbd2 = `nbd://${daemon.nbd}/session/db/disk0`;
    // The VM keeps writing while the copy resumes (behind and ahead of the cursor).
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 1M 1M', '-c', 'write -P 0x33 60M 1M', nbd2]);
    await api('PUT', '/v1/sessions/db/qos', {});
    const until = Date.now() + 60_000;
    let m = await migration();
    while (m.state !== 'in-step' && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
      m = await migration();
    }
    expect(m.state).toBe('in-step');
    // Resumed: what was copied after the restart is about the rest of the disk, not all of it.
    expect(m.copiedBytes - atKill.copiedBytes).toBeLessThan(SIZE - atKill.cursor + 8 * MiB);
    const sw = await runOk(process.execPath, [CLI, '--server', `http://${daemon.http}`, '--token-file', daemon.tokenFile, 'switch', 'db', '--json']);
    expect(JSON.parse(sw.stdout).verified[0].repaired).toBe(0);
    const expected = fs.readFileSync(src);
    expected.fill(0x11, 40 * MiB, 41 * MiB);
    expected.fill(0x22, 1 * MiB, 2 * MiB);
    expected.fill(0x33, 60 * MiB, 61 * MiB);
    expect(fs.readFileSync(target).equals(expected)).toBe(true);
    await runOk(process.execPath, [CLI, '--server', `http://${daemon.http}`, '--token-file', daemon.tokenFile, 'finish', 'db']);
    expect(await daemon.stop('SIGTERM')).toBe(0);
    daemon = undefined;
  }, 120_000);
});
