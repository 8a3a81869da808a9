/**
 * Real partitioned disk images for the FUSE interop tests and benchmark-like checks: known file
 * trees (text, binary, empty and nested files, a symlink, awkward names) are written into ext4
 * filesystems with `mke2fs -d`, then placed at the partition offsets of a disk labelled by
 * `sfdisk` (GPT, or MBR with an extended partition and logical partitions).
 *
 * Also keeps track of loop mounts made by a test so afterAll can undo them even after a failure
 * (`umount -l`, then `losetup -d` of anything still attached to the given files).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { run, runOk } from './run.js';

const MiB = 1024 * 1024;

/** Writes a file tree under `dir` whose content depends on `seed`. */
export function writeTree(dir: string, seed: string, opts: { files?: number; bigBytes?: number } = {}): void {
  const rnd = (n: number, salt: string): Buffer => {
    const out = Buffer.alloc(n);
    let block = 0;
    for (let pos = 0; pos < n; pos += 32) crypto.createHash('sha256').update(`${seed}/${salt}/${block++}`).digest().copy(out, pos);
    return out;
  };
  fs.mkdirSync(path.join(dir, 'etc/app/conf.d'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'var/log'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'home/user with space'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'etc/hostname'), `${seed}\n`);
  fs.writeFileSync(path.join(dir, 'etc/app/app.conf'), Array.from({ length: 200 }, (_, i) => `key${i} = ${seed}-${i}`).join('\n'));
  fs.writeFileSync(path.join(dir, 'etc/app/conf.d/empty'), '');
  fs.writeFileSync(path.join(dir, 'var/log/big.bin'), rnd(opts.bigBytes ?? 700_000 + seed.length, 'big'));
  fs.writeFileSync(path.join(dir, 'home/user with space/notes.txt'), `notes of ${seed}\n`.repeat(500));
  fs.symlinkSync('../etc/hostname', path.join(dir, 'home/link-to-hostname'));
  const n = opts.files ?? 40;
  fs.mkdirSync(path.join(dir, 'small'), { recursive: true });
  for (let i = 0; i < n; i++) fs.writeFileSync(path.join(dir, 'small', `f${String(i).padStart(4, '0')}.dat`), rnd(100 + ((i * 997) % 9000), `s${i}`));
}

/** An ext4 image of `bytes` holding the tree at `src`. */
export async function makeExt4(image: string, src: string, bytes: number): Promise<void> {
  fs.rmSync(image, { force: true });
  fs.writeFileSync(image, '');
  fs.truncateSync(image, bytes);
  await runOk('mke2fs', ['-q', '-F', '-t', 'ext4', '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-d', src, image]);
}

export interface LaidOutPartition {
  number: number;
  start: number;
  size: number;
}

/** Labels `disk` (created with `bytes`) with an sfdisk script and returns sfdisk's own view of the table. */
export async function label(disk: string, bytes: number, script: string): Promise<LaidOutPartition[]> {
  fs.rmSync(disk, { force: true });
  fs.writeFileSync(disk, '');
  fs.truncateSync(disk, bytes);
  await runOk('sfdisk', ['-q', disk], { input: script });
  const json = JSON.parse((await runOk('sfdisk', ['--json', disk])).stdout) as { partitiontable: { partitions: Array<{ node: string; start: number; size: number }> } };
  return json.partitiontable.partitions.map((p) => ({ number: Number(/(\d+)$/.exec(p.node)![1]), start: p.start * 512, size: p.size * 512 }));
}

/** Copies a filesystem image into the disk at a partition's offset. */
export function place(disk: string, image: string, offset: number): void {
  const data = fs.readFileSync(image);
  const fd = fs.openSync(disk, 'r+');
  try {
    fs.writeSync(fd, data, 0, data.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

export { MiB };

/** Loop mounts of a test, undone by cleanup() whatever happened. */
export class LoopMounts {
  readonly #mounts: string[] = [];
  readonly #files = new Set<string>();

  /** `mount -o loop,ro[,OPTS] FILE DIR` (what docs/file-restore.md tells operators to run). */
  async mount(file: string, dir: string, extra: string[] = []): Promise<void> {
    fs.mkdirSync(dir, { recursive: true });
    this.#files.add(file);
    await runOk('mount', ['-t', 'ext4', '-o', ['loop', 'ro', ...extra].join(','), file, dir]);
    this.#mounts.push(dir);
  }

  async umount(dir: string): Promise<void> {
    await runOk('umount', [dir]);
    this.#mounts.splice(this.#mounts.indexOf(dir), 1);
  }

  async cleanup(): Promise<void> {
    for (const dir of this.#mounts.splice(0).reverse()) await run('umount', ['-l', dir]);
    for (const file of this.#files) {
      const r = await run('losetup', ['-j', file]);
      for (const line of r.stdout.split('\n')) {
        const dev = /^(\/dev\/loop\d+):/.exec(line)?.[1];
        if (dev) await run('losetup', ['-d', dev]);
      }
    }
  }
}
