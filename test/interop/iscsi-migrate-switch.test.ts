/**
 * A recovered disk migrates and switches over while a real initiator writes to it over iSCSI:
 * `rebound recover` publishes the session on the daemon's iSCSI target, one qemu-io process stays
 * logged in over `iscsi://` for the whole test and writes before the migration, while it copies,
 * once it is in step, while `rebound switch` drains and re-points the disk, and after the switch.
 * Every write is then read back through the same iSCSI session and found in the production file,
 * which equals the base image with the writes applied; the restore point never changed.
 * The batches are bounded by count, not time: nothing depends on the machine's speed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/cli.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage, standardLayout, tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { run } from '../helpers/run.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const SIZE = 64 * MiB;
const WRITE = 64 * KiB;
const missing = missingPeers('qemu-io', 'qemu-img');

/**
 * qemu-io in interactive mode: one process (one iSCSI login) for the whole test. It takes one
 * command per prompt (lines piped ahead of the prompt are not read), so `run` sends each command
 * after the previous one's prompt came back.
 */
class QemuIo {
  readonly #p: ChildProcess;
  #out = '';
  #err = '';
  constructor(url: string) {
    this.#p = spawn('qemu-io', ['-f', 'raw', url], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#p.stdout!.setEncoding('utf8').on('data', (d: string) => (this.#out += d));
    this.#p.stderr!.setEncoding('utf8').on('data', (d: string) => (this.#err += d));
  }
  get output(): string {
    return this.#out + this.#err;
  }
  count(re: RegExp): number {
    return [...this.#out.matchAll(new RegExp(re.source, 'g'))].length;
  }
  async #prompts(n: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.count(/qemu-io> /) < n) {
      if (this.#p.exitCode !== null || Date.now() > deadline) throw new Error(`qemu-io stopped or timed out:\n${this.output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  /** Runs the commands one after the other (bounded wait for each). */
  async run(cmds: string[], timeoutMs = 60_000): Promise<void> {
    await this.#prompts(1, timeoutMs);
    for (const c of cmds) {
      const n = this.count(/qemu-io> /);
      this.#p.stdin!.write(c + '\n');
      await this.#prompts(n + 1, timeoutMs);
    }
  }
  async quit(): Promise<number | null> {
    this.#p.stdin!.end('quit\n');
    if (this.#p.exitCode === null) await new Promise((r) => this.#p.once('exit', r));
    return this.#p.exitCode;
  }
  kill(): void {
    this.#p.kill('SIGKILL');
  }
}

describe.skipIf(missing.length > 0)('migration and switch-over while an initiator writes over iSCSI', () => {
  let dir: string;
  let daemon: DaemonProcess | undefined;
  let io: QemuIo | undefined;

  beforeAll(async () => {
    dir = tempDir('rebound-iscsi-switch-');
  });
  afterAll(async () => {
    io?.kill();
    await daemon?.stop('SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps every write made before, during and after the switch; the target equals base + writes', async () => {
    const base = path.join(dir, 'disk.raw');
    const expected = makeImage(base, standardLayout(SIZE));
    const baseCopy = Buffer.from(expected);
    daemon = await startDaemonProcess(['--data', path.join(dir, 'data'), '--nbd', 'none', '--http', '127.0.0.1:0', '--iscsi', '127.0.0.1:0']);
    const rb = async (...a: string[]) => {
      const r = await cli(['--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, ...a]);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      return r;
    };
    await rb('backup', 'web1', '--disk', `disk0=${base}`);
    const rec = JSON.parse((await rb('recover', 'web1', '--name', 'vm', '--json')).stdout) as { iscsi: { luns: Array<{ url: string }> } };
    const url = rec.iscsi.luns[0]!.url;
    expect(url).toMatch(/^iscsi:\/\/127\.0\.0\.1:\d+\/iqn\.2026-12\.org\.rebound:session\.vm\/0$/);

    io = new QemuIo(url);
    const writes: Array<{ offset: number; pattern: number }> = [];
    // Batch k writes `n` blocks of 64 KiB with pattern k, 128 KiB apart, from k * 12 MiB + 32 KiB
    // (across the base's data and its holes).
    const batch = (k: number, n: number): string[] =>
      Array.from({ length: n }, (_, i) => {
        const offset = k * 12 * MiB + 32 * KiB + i * 128 * KiB;
        const pattern = 0x11 * (k + 1);
        writes.push({ offset, pattern });
        return `write -P ${pattern} ${offset} ${WRITE}`;
      });
    const send = (cmds: string[]): Promise<void> => io!.run(cmds);

    await send(batch(0, 16)); // before the migration
    const target = path.join(dir, 'production.raw');
    const migrating = rb('migrate', 'vm', '--to', target); // returns once in step
    await send(batch(1, 32)); // while it copies (or just after: either way tracked as dirty)
    await migrating;
    await send(batch(2, 16)); // in step: dirty blocks the switch copies
    // The switch drains the disk's I/O and re-points it while this batch is being written.
    const WROTE = /wrote 65536\/65536 bytes at offset/;
    const before = io.count(WROTE);
    const during = send(batch(3, 48));
    const sw = JSON.parse((await rb('switch', 'vm', '--json')).stdout) as { verified: Array<{ disk: string; repaired: number }> };
    const atSwitch = io.count(WROTE) - before;
    await during;
    console.info(`iSCSI writes of the batch sent with the switch: ${atSwitch} of 48 done when the switch answered`);
    expect(sw.verified).toEqual([expect.objectContaining({ disk: 'disk0', repaired: 0 })]);
    await send(batch(4, 16)); // after the switch: straight to the target
    await send(['flush']); // SYNCHRONIZE CACHE reaches the target

    // Every write reads back through the same iSCSI session.
    const reads = writes.map((w) => `read -P ${w.pattern} ${w.offset} ${WRITE}`);
    await send(reads);
    expect(io.count(WROTE)).toBe(writes.length);
    expect(io.count(/read 65536\/65536 bytes at offset/)).toBe(writes.length);
    expect(io.output).not.toMatch(/Pattern verification failed|Input\/output error|error/i);
    expect(await io.quit()).toBe(0);
    io = undefined;

    // The session now runs on the target, and the target holds exactly base + writes.
    const report = JSON.parse((await rb('sessions', 'vm', '--json')).stdout) as { disks: Array<{ state: string }> };
    expect(report.disks[0]!.state).toBe('retired'); // switched, compared, overlay retired
    expect(fs.existsSync(path.join(dir, 'data', 'sessions', 'vm', 'overlays', 'disk0'))).toBe(false);
    await rb('finish', 'vm');
    for (const w of writes) expected.fill(w.pattern, w.offset, w.offset + WRITE);
    const want = path.join(dir, 'expected.raw');
    fs.writeFileSync(want, expected);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', target, want]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical');
    // The base file and the restore point never changed.
    expect(fs.readFileSync(base).equals(baseCopy)).toBe(true);
    expect(await daemon.stop('SIGTERM')).toBe(0);
    daemon = undefined;
  }, 300_000);
});
