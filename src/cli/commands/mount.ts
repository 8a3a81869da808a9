import type { Command } from 'commander';
import path from 'node:path';
import type { MountInfo } from '../../fuse/mount.js';
import { formatSize } from '../../util/size.js';
import { apiClient, table } from '../api.js';
import type { CliIo } from '../io.js';

/** `rebound mount [DIR]` and `rebound unmount DIR`: the daemon's read-only FUSE file tree. */
export function registerMount(program: Command, io: CliIo): void {
  program
    .command('mount')
    .description('mount the daemon\'s read-only file tree (restore points, partitions, config files, sessions) at DIR; without DIR, list the mounts')
    .argument('[dir]', 'an empty directory on the daemon\'s host (created if missing)')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      '\nLayout:\n' +
        '  DIR/vms/VM/POINT/DISK.raw        whole disk of a restore point (POINT is its time; latest -> newest)\n' +
        '  DIR/vms/VM/POINT/DISK.parts/N    partition N of that disk (MBR incl. logical, GPT)\n' +
        '  DIR/vms/VM/POINT/config/FILE     VM configuration files stored with the backup\n' +
        '  DIR/sessions/NAME/DISK.raw       live, read-only view of a recovery session\'s disk\n' +
        '\nCopy files out of a backup:\n' +
        '  mount -o loop,ro DIR/vms/web1/latest/disk0.parts/1 /mnt/restore      (ext4 with a dirty journal: -o loop,ro,noload)\n' +
        '  cp -a /mnt/restore/etc/nginx /tmp/ && umount /mnt/restore\n' +
        '\nSee docs/file-restore.md.',
    )
    .action(async (dir: string | undefined, opts: { json?: boolean }, cmd: Command) => {
      const client = apiClient(cmd, io);
      if (!dir) {
        const r = await client.get<{ mounts: MountInfo[] }>('/v1/mounts');
        if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
        if (r.mounts.length === 0) return io.stdout('no file tree mounted (rebound mount DIR, or rebound serve --fuse DIR)\n');
        return io.stdout(
          table(
            ['DIR', 'MOUNTED', 'OPEN FILES', 'READ', 'ERRORS'],
            r.mounts.map((m) => [m.dir, m.mountedAt.replace(/\.\d+Z$/, 'Z'), String(m.openFiles), formatSize(m.bytesRead), String(m.errors)]),
          ),
        );
      }
      const abs = path.resolve(io.cwd, dir);
      const m = await client.post<MountInfo>('/v1/mounts', { dir: abs });
      if (opts.json) return io.stdout(JSON.stringify(m, null, 2) + '\n');
      io.stdout(`mounted the file tree at ${m.dir}\n  restore points: ${m.dir}/vms/VM/POINT/DISK.raw, DISK.parts/N\n  sessions:       ${m.dir}/sessions/NAME/DISK.raw\n`);
    });

  program
    .command('unmount')
    .alias('umount')
    .description('unmount the daemon\'s file tree from DIR (fails while a loop device or a process still uses it, unless --lazy)')
    .argument('<dir>', 'the mount directory')
    .option('--lazy', 'detach at once even if busy; the mount goes away when its last user does')
    .option('--json', 'print JSON')
    .action(async (dir: string, opts: { lazy?: boolean; json?: boolean }, cmd: Command) => {
      const abs = path.resolve(io.cwd, dir);
      const q = `dir=${encodeURIComponent(abs)}${opts.lazy ? '&lazy=true' : ''}`;
      const r = await apiClient(cmd, io).request<{ dir: string; unmounted: boolean }>('DELETE', `/v1/mounts?${q}`);
      if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
      io.stdout(`unmounted ${abs}${opts.lazy ? ' (lazily)' : ''}\n`);
    });
}
