import { Command } from 'commander';
import path from 'node:path';
import type { JobInfo } from '../../api/jobs.js';
import type { PointManifest } from '../../repo/manifest.js';
import type { SessionReport } from '../../recovery/session-report.js';
import { isNbdUri } from '../../nbd/client.js';
import { formatSize, parseSize } from '../../util/size.js';
import { apiClient, table } from '../api.js';
import type { CliIo } from '../io.js';
import { followJob } from '../jobs.js';
import { parsePointRef } from './repo.js';

type SessionDetail = SessionReport & {
  connect: { disks: Array<{ disk: string; export: string; nbdUri: string | null; qemuDrive: string | null; qemuBlockdev: string; libvirt: string }> } | null;
  iscsi?: { portals: string[]; iqn: string; luns: Array<{ lun: number; disk: string; url: string }> } | null;
  xen?: { servers: string[]; srUuid: string; path: string; vdis: Array<{ disk: string; uuid: string; file: string }> } | null;
};

const enc = encodeURIComponent;

function formatAge(s: number): string {
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function parseRate(text: string): number {
  return parseSize(text.replace(/\/s$/i, ''));
}

function qosOf(opts: { iops?: string; bandwidth?: string }): { iops?: number; bps?: number } {
  const q: { iops?: number; bps?: number } = {};
  if (opts.iops !== undefined) q.iops = Number.parseInt(opts.iops, 10);
  if (opts.bandwidth !== undefined) q.bps = parseRate(opts.bandwidth);
  if (q.iops !== undefined && !(Number.isSafeInteger(q.iops) && q.iops >= 0)) throw new Error(`--iops ${opts.iops}: expected a whole number (0: unlimited)`);
  return q;
}

function printSession(io: CliIo, s: SessionDetail): void {
  io.stdout(`session ${s.name}: ${s.vm}@${s.point}, ${s.state}, age ${formatAge(s.ageSeconds)}\n`);
  for (const c of s.connect?.disks ?? []) {
    io.stdout(`\n  disk ${c.disk}\n    NBD:     ${c.nbdUri ?? '(no NBD listener)'}\n`);
    if (c.qemuDrive) io.stdout(`    QEMU:    ${c.qemuDrive}\n`);
    io.stdout(`    QEMU:    ${c.qemuBlockdev}\n    libvirt: ${c.libvirt}\n`);
  }
  if (s.iscsi) {
    io.stdout(`\n  iSCSI:   portal ${s.iscsi.portals.join(', ')}, target ${s.iscsi.iqn}\n`);
    for (const l of s.iscsi.luns) io.stdout(`    LUN ${l.lun}: disk ${l.disk}  ${l.url}\n`);
  }
  if (s.xen) {
    io.stdout(`\n  XenServer: NFS SR ${s.xen.srUuid} at ${s.xen.servers.join(', ')}, serverpath /xen (SR folder ${s.xen.path})\n`);
    for (const v of s.xen.vdis) io.stdout(`    VDI ${v.uuid}: disk ${v.disk}  ${s.xen.path}/${v.file}\n`);
  }
  for (const w of s.warnings) io.stdout(`  warning: ${w}\n`);
}

export function registerSessions(program: Command, io: CliIo): void {
  program
    .command('recover')
    .description('instant recovery: publish a restore point as writable NBD exports (session/NAME/DISK) at once; writes go to a persistent overlay, the backup never changes')
    .argument('<vm@point>', 'VM[@POINT] (POINT is an id or latest, the default)')
    .option('--name <name>', 'session name (default: the VM name, made unique)')
    .option('--quota <size>', 'most data each disk\'s overlay may hold (e.g. 20G); writes beyond it fail with ENOSPC')
    .option('--iops <n>', 'IOPS limit for each of the session\'s disks')
    .option('--bandwidth <rate>', 'bandwidth limit for each disk, e.g. 100M/s')
    .option('--no-nbd', 'do not publish the session over NBD')
    .option('--no-nfs', 'do not publish the session in the NFS datastore')
    .option('--no-iscsi', 'do not publish the session as an iSCSI target')
    .option('--no-fuse', 'do not show the session in the FUSE file tree')
    .option('--allow <identity>', 'with NBD TLS: an identity (PSK username, certificate DN or CN=NAME) that may open the session\'s disks; repeatable', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--json', 'print the session as JSON')
    .action(async (ref: string, opts: { name?: string; quota?: string; iops?: string; bandwidth?: string; nbd: boolean; nfs: boolean; iscsi: boolean; fuse: boolean; allow: string[]; json?: boolean }, cmd: Command) => {
      const { vm, point } = parsePointRef(ref);
      const s = await apiClient(cmd, io).post<SessionDetail>('/v1/sessions', {
        vm,
        point,
        ...(opts.name ? { name: opts.name } : {}),
        ...(opts.quota ? { quota: parseSize(opts.quota) } : {}),
        qos: qosOf(opts),
        publish: { nbd: opts.nbd, nfs: opts.nfs, fuse: opts.fuse, iscsi: opts.iscsi },
        ...(opts.allow.length > 0 ? { allow: opts.allow } : {}),
      });
      if (opts.json) return io.stdout(JSON.stringify(s, null, 2) + '\n');
      printSession(io, s);
      io.stdout(`\nwhen done: rebound migrate ${s.name} --to TARGET --switch, or rebound discard ${s.name}\n`);
    });

  program
    .command('sessions')
    .description('report every recovery session: age, restore point, overlay size, quota, write rate, I/O, migration; flags forgotten ones')
    .argument('[name]', 'one session, with its connection strings')
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, opts: { json?: boolean }, cmd: Command) => {
      const client = apiClient(cmd, io);
      if (name) {
        const s = await client.get<SessionDetail>(`/v1/sessions/${enc(name)}`);
        if (opts.json) return io.stdout(JSON.stringify(s, null, 2) + '\n');
        printSession(io, s);
        io.stdout('\n' + diskTable(s));
        return;
      }
      const r = await client.get<{ sessions: SessionReport[]; broken: Array<{ dir: string; error: string }> }>('/v1/sessions');
      if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
      if (r.sessions.length === 0) io.stdout('no recovery sessions (rebound recover VM)\n');
      else {
        io.stdout(
          table(
            ['SESSION', 'POINT', 'AGE', 'STATE', 'OVERLAY', 'WRITE RATE', 'MIGRATION', 'WARNINGS'],
            r.sessions.map((s) => [
              s.name,
              `${s.vm}@${s.point}`,
              formatAge(s.ageSeconds),
              s.state,
              formatSize(s.overlayBytes),
              `${formatSize(s.writeRate)}/s`,
              s.disks.map((d) => (d.migration ? `${d.name} ${d.migration.percent}%` : '')).filter(Boolean).join(' ') || '-',
              s.warnings.length ? String(s.warnings.length) : '',
            ]),
          ),
        );
        for (const s of r.sessions) for (const w of s.warnings) io.stdout(`warning: ${s.name}: ${w}\n`);
      }
      for (const b of r.broken) io.stdout(`error: session in ${b.dir} is not served: ${b.error}\n`);
    });

  program
    .command('discard')
    .description('end a recovery session and throw away its overlays (every write since recover) and unpin its restore point')
    .argument('<session>')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await apiClient(cmd, io).request('DELETE', `/v1/sessions/${enc(name)}`);
      io.stdout(`discarded session ${name}\n`);
    });

  program
    .command('qos')
    .description('show or change I/O limits live: of one session (each disk), or with --global of all session exports together')
    .argument('[session]')
    .option('--global', 'the limit shared by all session exports')
    .option('--iops <n>', 'operations per second (0: unlimited)')
    .option('--bandwidth <rate>', 'bytes per second, e.g. 200M/s (0: unlimited)')
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, opts: { global?: boolean; iops?: string; bandwidth?: string; json?: boolean }, cmd: Command) => {
      const client = apiClient(cmd, io);
      if (!name && !opts.global) throw new Error('give a session name, or --global');
      const url = opts.global ? '/v1/qos' : `/v1/sessions/${enc(name!)}/qos`;
      const change = opts.iops !== undefined || opts.bandwidth !== undefined;
      let r: { qos: { iops?: number; bps?: number } };
      if (change) {
        const current = opts.global ? (await client.get<{ qos: object }>(url)).qos : (await client.get<SessionReport>(`/v1/sessions/${enc(name!)}`)).qos;
        r = await client.request('PUT', url, { ...current, ...qosOf(opts) });
      } else if (opts.global) r = await client.get(url);
      else r = { qos: (await client.get<SessionReport>(`/v1/sessions/${enc(name!)}`)).qos };
      if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
      io.stdout(`${opts.global ? 'all sessions' : name}: iops ${r.qos.iops ?? 'unlimited'}, bandwidth ${r.qos.bps ? `${formatSize(r.qos.bps)}/s` : 'unlimited'}\n`);
    });

  program
    .command('migrate')
    .description('copy a session\'s disks (base + overlay) to production storage while the VM runs, keep the copy in step, and with --switch move the VM\'s I/O there')
    .argument('<session>')
    .requiredOption('--to <target>', 'a file path, a block device, or an NBD URI (qemu-nbd/nbdkit on the production host); with several disks include {disk}')
    .option('--disk <name>', 'only this disk, repeatable', (v: string, prev: string[] = []) => [...prev, v])
    .option('--rate <rate>', 'copy rate limit, e.g. 100M/s')
    .option('--switch', 'switch the session\'s exports to the target as soon as it is in step')
    .option('--json', 'print the finished job as JSON')
    .action(async (name: string, opts: { to: string; disk?: string[]; rate?: string; switch?: boolean; json?: boolean }, cmd: Command) => {
      const client = apiClient(cmd, io);
      const to = isNbdUri(opts.to) ? opts.to : path.resolve(io.cwd, opts.to);
      const job = await client.post<JobInfo>(`/v1/sessions/${enc(name)}/migrate`, {
        to,
        ...(opts.disk ? { disks: opts.disk } : {}),
        ...(opts.rate ? { rate: parseRate(opts.rate) } : {}),
        ...(opts.switch ? { switch: true } : {}),
      });
      const done = await followJob(client, job, io);
      if (opts.json) return io.stdout(JSON.stringify(done, null, 2) + '\n');
      const r = done.result as { switched: Array<{ disk: string; units: number; repaired: number }> | null };
      if (r.switched) {
        for (const v of r.switched) io.stdout(`${v.disk}: switched to production storage; final comparison of ${v.units} units, ${v.repaired} repaired; overlay retired\n`);
        io.stdout(`the VM now runs on production storage; rebound finish ${name} when the hypervisor is reattached\n`);
      } else io.stdout(`${name} is in step with ${to}; rebound switch ${name} moves the VM's I/O there\n`);
    });

  program
    .command('switch')
    .description('switch a session whose migration is in step: drain I/O, re-point its exports to the target, compare, retire the overlay')
    .argument('<session>')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }, cmd: Command) => {
      const r = await apiClient(cmd, io).post<SessionDetail & { verified: Array<{ disk: string; units: number; repaired: number }> }>(`/v1/sessions/${enc(name)}/switch`, {});
      if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
      for (const v of r.verified) io.stdout(`${v.disk}: switched; final comparison of ${v.units} units, ${v.repaired} repaired; overlay retired\n`);
    });

  program
    .command('finish')
    .description('end a switched session (its disks live on production storage now); refused while a target is incomplete')
    .argument('<session>')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await apiClient(cmd, io).post(`/v1/sessions/${enc(name)}/finish`, {});
      io.stdout(`finished session ${name}\n`);
    });

  program
    .command('commit')
    .description('store a running session\'s disks (base + overlay) as a new crash-consistent restore point; only changed chunks are new')
    .argument('<session>')
    .option('--tag <tag>', 'a tag to attach, repeatable', (v: string, prev: string[] = []) => [...prev, v])
    .option('--json', 'print the finished job as JSON')
    .action(async (name: string, opts: { tag?: string[]; json?: boolean }, cmd: Command) => {
      const client = apiClient(cmd, io);
      const job = await client.post<JobInfo>(`/v1/sessions/${enc(name)}/commit`, { tags: opts.tag ?? [] });
      const done = await followJob(client, job, io);
      if (opts.json) return io.stdout(JSON.stringify(done, null, 2) + '\n');
      const m = done.result as PointManifest;
      io.stdout(`committed ${name} as ${m.vm}@${m.id}: ${m.disks.map((d) => `${d.name} ${d.newChunks} new chunks (${formatSize(d.newBytes)})`).join(', ')}\n`);
    });
}

function diskTable(s: SessionReport): string {
  return table(
    ['DISK', 'SIZE', 'OVERLAY', 'QUOTA', 'READS', 'WRITES', 'WRITE RATE', 'MIGRATION'],
    s.disks.map((d) => [
      d.name,
      formatSize(d.size),
      formatSize(d.overlayBytes),
      d.quota ? formatSize(d.quota) : '-',
      String(d.io.reads),
      String(d.io.writes),
      `${formatSize(d.io.writeRate)}/s`,
      d.migration ? `${d.migration.state} ${d.migration.percent}% -> ${d.migration.target}${d.migration.error ? ` (${d.migration.error})` : ''}` : d.switched ? 'switched' : '-',
    ]),
  );
}
