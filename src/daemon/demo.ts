/**
 * Demo data for `rebound serve --demo`: a small raw disk image with an MBR partition table and
 * recognisable content (written sparsely, so it costs little disk). The daemon backs it up into the
 * repository as VM `demo` (once) and publishes what instant recovery gives an operator: the restore
 * point read-only (demo@latest/disk0) and a writable copy-on-write export of it (`recovered`), plus
 * a memory scratch disk. Lets a new user try real clients (qemu-img, nbdinfo, qemu-io) at once.
 */
import fs from 'node:fs';
import path from 'node:path';

export const DEMO_IMAGE_SIZE = 64 * 1024 * 1024;

export const DEMO_VM = 'demo';
export const DEMO_DISK = 'disk0';

/** Export specs of the demo (the daemon backs up `demoImagePath()` first if the VM has no backup). */
export function demoExports(): string[] {
  return [
    `recovered=repo:${DEMO_VM}/${DEMO_DISK},cow,desc=the demo VM recovered from its latest backup (writable, copy-on-write)`,
    'scratch=memory:64M,desc=volatile scratch disk (writable, in RAM)',
  ];
}

export function demoImagePath(dataDir: string): string {
  return path.join(dataDir, 'demo', 'demo-disk.img');
}

/** Creates the demo disk image if missing and returns its path. */
export function prepareDemoImage(dataDir: string): string {
  const dir = path.join(dataDir, 'demo');
  const image = demoImagePath(dataDir);
  if (!fs.existsSync(image)) {
    fs.mkdirSync(dir, { recursive: true });
    const tmp = image + '.tmp';
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.ftruncateSync(fd, DEMO_IMAGE_SIZE);
      fs.writeSync(fd, mbr(), 0, 512, 0);
      // One MiB of text at the start of the partition and another near the end of the disk.
      const text = Buffer.alloc(1024 * 1024);
      const line = Buffer.from('rebound demo disk: this block was served over NBD\n');
      for (let i = 0; i + line.length <= text.length; i += line.length) line.copy(text, i);
      fs.writeSync(fd, text, 0, text.length, 1024 * 1024);
      fs.writeSync(fd, text, 0, text.length, DEMO_IMAGE_SIZE - 4 * 1024 * 1024);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, image);
  }
  return image;
}

/** An MBR with one Linux partition from 1 MiB to the end of the disk. */
function mbr(): Buffer {
  const b = Buffer.alloc(512);
  const entry = 446;
  b[entry + 4] = 0x83; // Linux
  b.writeUInt32LE(2048, entry + 8); // first LBA
  b.writeUInt32LE(DEMO_IMAGE_SIZE / 512 - 2048, entry + 12);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}
