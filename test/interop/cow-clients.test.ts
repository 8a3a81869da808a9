/**
 * The copy-on-write overlay with real clients: qemu-io pattern writes and reads, qemu-img compare
 * against the untouched base, two libnbd connections seeing each other's flushed writes (multi-conn),
 * fio random writes with crc32c verification, and nbdinfo --map never calling written data zero.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { CowOverlay } from '../../src/blockdev/layers/cow/cow-overlay.js';
import { makeImage, tempDir } from '../helpers/images.js';
import { startNbd, type NbdFixture } from '../helpers/nbd-fixture.js';
import { missingPeers, NBDSH } from '../helpers/peers.js';
import { run, runOk } from '../helpers/run.js';

const SIZE = 32 * 1024 * 1024;
const missing = missingPeers('qemu-img', 'qemu-io', 'nbdinfo', 'nbdsh', 'fio');
let fx: NbdFixture;
let dir: string;
let base: string;
let overlay: CowOverlay;
let baseBefore: { sha: string; mtime: number };

const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

beforeAll(async () => {
  if (missing.length) return;
  dir = tempDir();
  base = path.join(dir, 'base.img');
  const content = makeImage(base, { size: SIZE, data: [[0, 4 * 1024 * 1024], [20 * 1024 * 1024, 1024 * 1024]] });
  content.fill(0xa5, 0, 4096); // nothing: makeImage already wrote; keep a known pattern in the file below
  fs.writeFileSync(base, Buffer.alloc(1 * 1024 * 1024, 0xa5), { flag: 'r+' });
  baseBefore = { sha: sha(base), mtime: fs.statSync(base).mtimeMs };
  overlay = await CowOverlay.open(await RawFileDevice.open(base), { dir: path.join(dir, 'overlay'), baseId: base });
  fx = await startNbd([{ name: 'vm', device: overlay }]);
});

afterAll(async () => {
  if (missing.length) return;
  await fx.close();
  expect({ sha: sha(base), mtime: fs.statSync(base).mtimeMs }).toEqual(baseBefore);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(missing.length > 0)('cow overlay with real clients', () => {
  it('qemu-io: pattern writes read back; the base shows through elsewhere', async () => {
    const uri = fx.unixUri('vm');
    const w = await runOk('qemu-io', ['-f', 'raw', '-t', 'none', '-c', 'write -P 0x3c 512 7000', '-c', 'write -P 0x4d 8M 1M', '-c', 'write -z -u 12M 64k', '-c', 'flush', uri]);
    expect(w.stdout).toContain('wrote 7000/7000 bytes at offset 512');
    const r = await run('qemu-io', [
      '-f', 'raw', '-r',
      '-c', 'read -P 0xa5 0 512',
      '-c', 'read -P 0x3c 512 7000',
      '-c', 'read -P 0xa5 7512 8000',
      '-c', 'read -P 0x4d 8M 1M',
      '-c', 'read -P 0 12M 64k',
      uri,
    ]);
    expect(r.stdout + r.stderr).not.toMatch(/fail|mismatch/i);
    expect(r.stdout.match(/^read /gm)).toHaveLength(5);
  });

  it('qemu-img compare shows the modification against the base (and nothing else)', async () => {
    const r = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', base, fx.uri('vm')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/Content mismatch at offset 512!/);
  });

  it('two connections see each other\'s flushed writes (multi-conn)', async () => {
    const script = `
import nbd
h1 = nbd.NBD(); h1.connect_uri(${JSON.stringify(fx.unixUri('vm'))})
h2 = nbd.NBD(); h2.connect_uri(${JSON.stringify(fx.unixUri('vm'))})
assert h1.can_multi_conn() and h2.can_multi_conn()
h1.pwrite(b"from-one" * 512, 16 * 1024 * 1024 + 4096)
h1.flush()
assert h2.pread(4096, 16 * 1024 * 1024 + 4096) == b"from-one" * 512
h2.pwrite(b"two!" * 1024, 16 * 1024 * 1024 + 100)
h2.flush()
got = h1.pread(4096, 16 * 1024 * 1024 + 100)
assert got == b"two!" * 1024, got[:16]
print("multi-conn ok")
`;
    const r = await runOk(NBDSH[0]!, ['-c', script]);
    expect(r.stdout).toContain('multi-conn ok');
  });

  it('fio random writes with crc32c verification', async () => {
    const r = await runOk('fio', [
      '--name=cowverify', '--ioengine=nbd', `--uri=${fx.unixUri('vm')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
      '--offset=24M', '--size=4M', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--output-format=json',
    ]);
    const job = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
    expect(job.error).toBe(0);
    expect(job.write.io_bytes).toBe(4 * 1024 * 1024);
    expect(job.read.io_bytes).toBe(4 * 1024 * 1024);
  });

  it('nbdinfo --map never reports written data as zero', async () => {
    const r = await runOk('nbdinfo', ['--map', '--json', fx.unixUri('vm')]);
    const extents: Array<{ offset: number; length: number; type: number }> = JSON.parse(r.stdout);
    const dataRanges: Array<[number, number]> = [[512, 7512], [8 * 1024 * 1024, 9 * 1024 * 1024], [16 * 1024 * 1024, 16 * 1024 * 1024 + 8192], [24 * 1024 * 1024, 28 * 1024 * 1024]];
    for (const [s, e] of dataRanges) {
      for (const x of extents) {
        if (x.offset < e && s < x.offset + x.length) expect(x.type & 2, `extent at ${x.offset} is called zero`).toBe(0);
      }
    }
    const zeroed = extents.find((x) => x.offset <= 12 * 1024 * 1024 && x.offset + x.length >= 12 * 1024 * 1024 + 65536);
    expect(zeroed!.type & 2).toBe(2);
    expect(overlay.stats().dataBlocks).toBeGreaterThan(1000);
  });
});
