/**
 * The committed recovery session of format 1 (test/fixtures/session-v1, made by
 * tools/fixtures/make-v1-fixtures.mjs): the daemon process, started on a copy of its data
 * directory, lists the session (`rebound sessions --json`) and serves its disks over NBD with the
 * bytes the session held (nbdcopy, byte for byte); the restore point under it is unchanged; the
 * session keeps working (a write survives a daemon restart).
 *
 * Strict about data (session identity, disks, sizes, bytes); lenient about report fields that are
 * not data (state, counters, warnings, URIs), which the session code may reshape.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, startDaemonProcess, type DaemonProcess } from '../../helpers/daemon-process.js';
import { tempDir } from '../../helpers/images.js';
import { missingPeers } from '../../helpers/peers.js';
import { runOk } from '../../helpers/run.js';

const FIXTURE = path.join(import.meta.dirname, '../../fixtures/session-v1');
const missing = missingPeers('nbdcopy', 'qemu-io');

interface Expected {
  name: string;
  vm: string;
  pointId: string;
  quota: number;
  exports: string[];
  disks: Record<string, { size: number; sha256: string }>;
  point: Record<string, { size: number; sha256: string }>;
}
const expected = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'expected.json'), 'utf8')) as Expected;
const sha = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex');

describe.skipIf(missing.length > 0)('recovery session format 1 fixture', () => {
  let dir: string;
  let data: string;
  let daemon: DaemonProcess | undefined;
  const args = (): string[] => ['--data', data, '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0'];
  const rebound = async (...argv: string[]): Promise<string> =>
    (await runOk(process.execPath, [CLI, '--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, ...argv], { timeoutMs: 30_000 })).stdout;
  /** The whole export, read with nbdcopy (a real peer), as bytes. */
  const readExport = async (name: string): Promise<Buffer> => {
    const out = path.join(dir, `${name.replaceAll('/', '_')}.raw`);
    fs.rmSync(out, { force: true });
    await runOk('nbdcopy', [`nbd://${daemon!.nbd}/${name}`, out], { timeoutMs: 30_000 });
    return fs.readFileSync(out);
  };

  beforeAll(async () => {
    dir = tempDir('rebound-session-v1-');
    data = path.join(dir, 'data');
    fs.cpSync(path.join(FIXTURE, 'data'), data, { recursive: true });
    daemon = await startDaemonProcess(args());
  });
  afterAll(async () => {
    await daemon?.stop('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists the session', async () => {
    const report = JSON.parse(await rebound('sessions', '--json')) as { sessions: Array<Record<string, unknown> & { name: string; disks: Array<{ name: string; size: number }> }> };
    expect(report.sessions.map((s) => s.name)).toEqual([expected.name]);
    const s = report.sessions[0]!;
    expect(s.vm).toBe(expected.vm);
    // The restore point it runs from, under whatever field name the report gives it.
    expect(JSON.stringify(s)).toContain(expected.pointId);
    expect(s.disks.map((d) => [d.name, d.size])).toEqual(Object.entries(expected.disks).map(([n, d]) => [n, d.size]));
    // No session was left on disk unserved.
    expect(daemon!.stderr()).not.toMatch(/session left on disk|cannot reopen session/);
  });

  it('serves each disk with the bytes the session held, and the restore point unchanged', async () => {
    for (const [i, [disk, want]] of Object.entries(expected.disks).entries()) {
      const got = await readExport(expected.exports[i]!);
      const img = fs.readFileSync(path.join(FIXTURE, 'expected', `${disk}.img`));
      expect(sha(img)).toBe(want.sha256);
      expect(got.length, disk).toBe(want.size);
      expect(got.equals(img), `${disk} differs from expected/${disk}.img`).toBe(true);
    }
    for (const [disk, want] of Object.entries(expected.point)) {
      expect(sha(await readExport(`${expected.vm}@${expected.pointId}/${disk}`)), disk).toBe(want.sha256);
    }
  });

  it('keeps working: a write lands in the v1 overlay and survives a daemon restart', async () => {
    const exp = expected.exports[0]!;
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 12288 4k', '-c', 'flush', `nbd://${daemon!.nbd}/${exp}`]);
    expect(await daemon!.stop('SIGTERM')).toBe(0);
    daemon = await startDaemonProcess(args());
    const want = fs.readFileSync(path.join(FIXTURE, 'expected', 'disk0.img'));
    want.fill(0x77, 12288, 16384);
    expect((await readExport(exp)).equals(want)).toBe(true);
    const other = fs.readFileSync(path.join(FIXTURE, 'expected', 'disk1.img'));
    expect((await readExport(expected.exports[1]!)).equals(other)).toBe(true);
  });
});
