/**
 * The conformance suite over the restore and migration targets, as openTarget opens them: a
 * regular file (new, and reused with content), a block device (a loop device, when this machine
 * can make one), and an NBD export of a real peer (qemu-nbd serving a temp file on a Unix socket);
 * plus the NBD client device as a read-only source. After a switch a target *is* the VM's disk.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NbdClientDevice } from '../../src/blockdev/base/nbd-client.js';
import { openTarget } from '../../src/repo/targets.js';
import { missingPeers } from '../helpers/peers.js';
import { blockDeviceSuite, type SuiteDevice } from './blockdev-suite.js';
import { imageFile, SIZE } from './fixtures.js';

blockDeviceSuite('file target (new file)', async () => {
  const img = imageFile();
  const device = await openTarget(path.join(img.dir, 'new.raw'), SIZE, { startOver: true });
  expect(device.fresh).toBe(true);
  return { device, expected: Buffer.alloc(SIZE), cleanup: img.cleanup };
});

blockDeviceSuite('file target (reused: content kept, longer file not shrunk)', async () => {
  const img = imageFile();
  fs.appendFileSync(img.file, Buffer.alloc(4096, 0xcc)); // a tail the device does not show
  const device = await openTarget(img.file, SIZE);
  expect(device.fresh).toBe(false);
  return {
    device,
    expected: img.expected,
    cleanup: () => {
      expect(fs.statSync(img.file).size).toBe(SIZE + 4096);
      img.cleanup();
    },
  };
});

// ---- block device (loop) --------------------------------------------------------------------

function loopUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  const img = imageFile(1024 * 1024);
  try {
    const r = spawnSync('losetup', ['-f', '--show', img.file], { encoding: 'utf8' });
    if (r.status !== 0) return `losetup cannot attach a loop device here: ${(r.stderr || r.error?.message || '').trim()}`;
    spawnSync('losetup', ['-d', r.stdout.trim()]);
    return undefined;
  } finally {
    img.cleanup();
  }
}

const noLoop = loopUnavailable();
if (noLoop) {
  console.warn(`skipping the block device target: ${noLoop}`);
  describe.skip('file target (block device)', () => it('needs a loop device', () => undefined));
} else {
  blockDeviceSuite('file target (block device: a loop device)', async () => {
    const img = imageFile();
    const loop = spawnSync('losetup', ['-f', '--show', img.file], { encoding: 'utf8' }).stdout.trim();
    const device = await openTarget(loop, SIZE, { startOver: true }); // never emptied: a device is not fresh
    expect(device.fresh).toBe(false);
    return {
      device,
      expected: img.expected,
      cleanup: () => {
        spawnSync('losetup', ['-d', loop]);
        img.cleanup();
      },
    };
  });
}

// ---- NBD (qemu-nbd) -------------------------------------------------------------------------

const missing = missingPeers('qemu-nbd');
const servers = new Set<ChildProcess>();
afterAll(() => {
  for (const s of servers) s.kill('SIGKILL');
});

/** Serves `file` with qemu-nbd on a Unix socket in its directory; resolves with the URI once it accepts. */
async function qemuNbd(file: string, args: string[] = []): Promise<{ uri: string; stop: () => Promise<void> }> {
  const sock = path.join(path.dirname(file), `nbd-${Math.random().toString(36).slice(2)}.sock`);
  const child = spawn('qemu-nbd', ['-k', sock, '-f', 'raw', '-x', 'disk', '-t', ...args, file], { stdio: 'ignore' });
  servers.add(child);
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(sock, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    uri: `nbd+unix:///disk?socket=${encodeURIComponent(sock)}`,
    stop: async () => {
      servers.delete(child);
      if (child.exitCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    },
  };
}

async function nbdDevice(open: (uri: string) => Promise<SuiteDevice['device']>, args: string[] = [], extra = 0): Promise<SuiteDevice> {
  const img = imageFile();
  if (extra) fs.appendFileSync(img.file, Buffer.alloc(extra, 0xcc));
  const server = await qemuNbd(img.file, args);
  const device = await open(server.uri);
  return {
    device,
    expected: img.expected,
    cleanup: async () => {
      await server.stop();
      img.cleanup();
    },
  };
}

if (missing.length) {
  describe.skip('NBD client device', () => it(`needs ${missing.join(', ')}`, () => undefined));
} else {
  blockDeviceSuite('NBD target (qemu-nbd, writable)', () => nbdDevice((uri) => openTarget(uri, SIZE)));
  blockDeviceSuite('NBD target (qemu-nbd, export larger than the disk: a prefix)', () => nbdDevice((uri) => openTarget(uri, SIZE), [], 65536));
  blockDeviceSuite('NBD source (qemu-nbd -r: read-only export)', () => nbdDevice((uri) => NbdClientDevice.open(uri), ['-r']));
  blockDeviceSuite('NBD source (writable export opened read-only)', () => nbdDevice((uri) => NbdClientDevice.open(uri, { readOnly: true })));

  describe('a target that cannot be opened is ERR_TARGET_OPEN_FAILED, whatever its kind', () => {
    it.each([
      ['a file in a missing directory', async () => ({ spec: '/nonexistent-dir/t.raw', cleanup: async () => undefined })],
      ['an unreachable NBD server', async () => ({ spec: 'nbd+unix:///disk?socket=/nonexistent-dir/x.sock', cleanup: async () => undefined })],
      ['a read-only NBD export', async () => {
        const img = imageFile();
        const server = await qemuNbd(img.file, ['-r']);
        return { spec: server.uri, cleanup: async () => (await server.stop(), img.cleanup()) };
      }],
      ['an NBD export smaller than the disk', async () => {
        const img = imageFile(SIZE / 2);
        const server = await qemuNbd(img.file);
        return { spec: server.uri, cleanup: async () => (await server.stop(), img.cleanup()) };
      }],
    ])('%s', async (_what, make) => {
      const t = await make();
      try {
        await expect(openTarget(t.spec, SIZE)).rejects.toMatchObject({ code: 'ERR_TARGET_OPEN_FAILED', message: expect.stringContaining(t.spec) });
      } finally {
        await t.cleanup();
      }
    });
  });

  describe('NBD client device capabilities', () => {
    it('follows the server: base:allocation gives extents with real holes; a read-only export cannot write', async () => {
      const sd = await nbdDevice((uri) => NbdClientDevice.open(uri), ['-r']);
      try {
        const caps = sd.device.capabilities();
        expect(caps).toMatchObject({ canWrite: false, canExtents: true, canTrim: false, canZero: false });
        const ext = await sd.device.extents(2 * 1024 * 1024, 1024 * 1024); // inside a hole of the standard layout
        expect(ext[0]).toMatchObject({ offset: 2 * 1024 * 1024, zero: true });
      } finally {
        await sd.device.close();
        await sd.cleanup?.();
      }
    });
  });
}
