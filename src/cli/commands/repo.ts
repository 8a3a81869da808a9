import { Command, Option } from 'commander';
import path from 'node:path';
import type { JobInfo } from '../../api/jobs.js';
import type { PointManifest } from '../../repo/manifest.js';
import { formatSize, parseSize } from '../../util/size.js';
import { makeLink } from '../../repo/s3-link.js';
import type { BootVerification } from '../../verify/result.js';
import { verificationSummary } from './verify.js';
import { apiClient, table } from '../api.js';
import type { CliIo } from '../io.js';
import { followJob } from '../jobs.js';
import { isNbdUri } from '../../nbd/client.js';
import type { PruneResult } from '../../repo/prune.js';
import type { GcResult } from '../../repo/gc.js';
import { ReboundError } from '../../errors.js';

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/** Splits VM[@POINT] into its parts (POINT defaults to latest). */
export function parsePointRef(ref: string): { vm: string; point: string } {
  const at = ref.indexOf('@');
  return at < 0 ? { vm: ref, point: 'latest' } : { vm: ref.slice(0, at), point: ref.slice(at + 1) || 'latest' };
}

export function registerRepo(program: Command, io: CliIo): void {
  const absolute = (p: string): string => (isNbdUri(p) ? p : path.resolve(io.cwd, p));

  program
    .command('backup')
    .description('back up a VM\'s disks into the repository as a new restore point (deduplicated; incremental with --dirty-bitmap)')
    .argument('<vm>', 'VM name (letters, digits, . _ + -)')
    .requiredOption('--disk <name=source>', 'a disk: NAME=SOURCE, SOURCE being a raw file, a block device, nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH; repeatable', collect)
    .addOption(new Option('--label <label>', 'consistency of the backup').choices(['crash', 'fs', 'app']).default('crash'))
    .option('--tag <tag>', 'a tag to attach, repeatable', collect)
    .option('--config <file>', 'a VM configuration file (.vmx, libvirt XML) to store with the backup, repeatable', collect)
    .option('--dirty-bitmap <name>', 'read only what the NBD source\'s qemu:dirty-bitmap:NAME marks as changed since the previous restore point')
    .option('--json', 'print the finished job (with the new restore point) as JSON')
    .action(async (vm: string, opts: { disk: string[]; label: string; tag?: string[]; config?: string[]; dirtyBitmap?: string; json?: boolean }, cmd: Command) => {
      const disks = opts.disk.map((d) => {
        const eq = d.indexOf('=');
        if (eq <= 0) throw new Error(`--disk ${d}: expected NAME=SOURCE`);
        return { name: d.slice(0, eq), source: absolute(d.slice(eq + 1)) };
      });
      const client = apiClient(cmd, io);
      const job = await client.post<JobInfo>('/v1/backups', {
        vm,
        disks,
        label: opts.label,
        tags: opts.tag ?? [],
        configs: (opts.config ?? []).map((c) => path.resolve(io.cwd, c)),
        ...(opts.dirtyBitmap ? { dirtyBitmap: opts.dirtyBitmap } : {}),
      });
      const done = await followJob(client, job, io);
      if (opts.json) return io.stdout(JSON.stringify(done, null, 2) + '\n');
      const m = done.result as PointManifest;
      io.stdout(`backed up ${m.vm}@${m.id} in ${(m.durationMs / 1000).toFixed(1)} s\n`);
      for (const d of m.disks) {
        io.stdout(
          `  ${d.name}: ${formatSize(d.size)}, read ${formatSize(d.readBytes)}, ${d.newChunks} new chunks (${formatSize(d.newBytes)} stored)` +
            (d.incremental ? `, incremental from ${d.incremental.basePoint} (${d.incremental.dirtyChunks} dirty chunks)` : '') +
            '\n',
        );
      }
    });

  program
    .command('list')
    .description('list backed-up VMs, or the restore points of one VM')
    .argument('[vm]', 'a VM name')
    .option('--json', 'print JSON')
    .action(async (vm: string | undefined, opts: { json?: boolean }, cmd: Command) => {
      const client = apiClient(cmd, io);
      if (!vm) {
        const r = await client.get<{ vms: Array<{ vm: string; points: number; latest: string }> }>('/v1/vms');
        if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
        if (r.vms.length === 0) return io.stdout('no backups yet (rebound backup VM --disk NAME=SOURCE)\n');
        return io.stdout(table(['VM', 'POINTS', 'LATEST'], r.vms.map((v) => [v.vm, String(v.points), v.latest])));
      }
      const r = await client.get<{ points: PointManifest[] }>(`/v1/vms/${encodeURIComponent(vm)}/points`);
      const verified = (await client.get<{ latest: Record<string, BootVerification> }>(`/v1/vms/${encodeURIComponent(vm)}/boot-verifications`)).latest;
      if (opts.json) return io.stdout(JSON.stringify({ ...r, points: r.points.map((p) => ({ ...p, bootVerification: verified[p.id] ?? null })) }, null, 2) + '\n');
      io.stdout(
        table(
          ['POINT', 'CREATED', 'LABEL', 'DISKS', 'SIZE', 'TAGS', 'BOOT VERIFIED'],
          r.points.map((p) => [
            p.id,
            p.createdAt.replace(/\.\d+Z$/, 'Z'),
            p.label,
            p.disks.map((d) => d.name).join(','),
            formatSize(p.disks.reduce((a, d) => a + d.size, 0)),
            p.tags.join(','),
            verificationSummary(verified[p.id]),
          ]),
        ),
      );
    });

  program
    .command('show')
    .description('show one restore point: disks, sizes, chunks, config files and its export names')
    .argument('<vm@point>', 'VM@POINT (POINT is an id or latest)')
    .option('--json', 'print JSON')
    .action(async (ref: string, opts: { json?: boolean }, cmd: Command) => {
      const { vm, point } = parsePointRef(ref);
      const client = apiClient(cmd, io);
      const m = await client.get<PointManifest & { exports: string[]; pinned: boolean }>(`/v1/vms/${encodeURIComponent(vm)}/points/${encodeURIComponent(point)}`);
      const { results } = await client.get<{ results: BootVerification[] }>(`/v1/vms/${encodeURIComponent(vm)}/points/${encodeURIComponent(m.id)}/boot-verifications`);
      if (opts.json) return io.stdout(JSON.stringify({ ...m, bootVerifications: results }, null, 2) + '\n');
      io.stdout(`${m.vm}@${m.id}  ${m.createdAt}  ${m.label}-consistent${m.tags.length ? `  tags: ${m.tags.join(', ')}` : ''}${m.pinned ? '  (pinned)' : ''}\n`);
      io.stdout(
        table(
          ['DISK', 'SIZE', 'CHUNKS', 'ZERO', 'NEW', 'STORED', 'EXPORT'],
          m.disks.map((d, i) => [d.name, formatSize(d.size), String(d.chunks), String(d.zeroChunks), String(d.newChunks), formatSize(d.newBytes), m.exports[i] ?? '']),
        ),
      );
      if (m.configs.length) io.stdout(`config files: ${m.configs.join(', ')}\n`);
      const last = results[results.length - 1];
      io.stdout(`boot verified: ${last ? `${verificationSummary(last)}${last.ok ? '' : ` (${last.reasons.join('; ')})`}, ${results.length} verification(s)` : 'never (rebound verify VM@POINT --boot)'}\n`);
    });

  program
    .command('restore')
    .description('restore one disk of a restore point in full to a file, block device or NBD export')
    .argument('<vm@point>', 'VM[@POINT] (POINT is an id or latest, the default)')
    .requiredOption('--disk <name>', 'which disk')
    .requiredOption('--to <target>', 'a file path (created or overwritten), a block device, or an NBD URI')
    .option('--json', 'print the finished job as JSON')
    .action(async (ref: string, opts: { disk: string; to: string; json?: boolean }, cmd: Command) => {
      const { vm, point } = parsePointRef(ref);
      const client = apiClient(cmd, io);
      const job = await client.post<JobInfo>('/v1/restores', { vm, point, disk: opts.disk, to: absolute(opts.to) });
      const done = await followJob(client, job, io);
      if (opts.json) return io.stdout(JSON.stringify(done, null, 2) + '\n');
      const r = done.result as { totalBytes: number; writtenBytes: number; seconds: number; point: string };
      io.stdout(
        `restored ${vm}@${r.point} ${opts.disk} to ${opts.to}: ${formatSize(r.totalBytes)} ` +
          `(${formatSize(r.writtenBytes)} of data) in ${r.seconds.toFixed(1)} s, ${formatSize(r.totalBytes / Math.max(r.seconds, 0.001))}/s\n`,
      );
    });

  program
    .command('prune')
    .description('delete restore points of a VM that the retention policy does not keep (pinned points are kept); run gc afterwards to free space')
    .argument('<vm>', 'VM name')
    .option('--keep-last <n>', 'keep the N newest points')
    .option('--keep-daily <n>', 'keep the newest point of each of the last N days with backups')
    .option('--keep-weekly <n>', 'same for ISO weeks')
    .option('--keep-monthly <n>', 'same for months')
    .option('--dry-run', 'only show what would be deleted')
    .option('--json', 'print the plan and result as JSON')
    .action(async (vm: string, opts: Record<string, string | boolean | undefined>, cmd: Command) => {
      const policy: Record<string, number> = {};
      for (const [flag, key] of [['keepLast', 'keepLast'], ['keepDaily', 'keepDaily'], ['keepWeekly', 'keepWeekly'], ['keepMonthly', 'keepMonthly']] as const) {
        if (opts[flag] !== undefined) {
          const n = Number(opts[flag]);
          if (!Number.isInteger(n) || n < 0) throw new ReboundError('ERR_INVALID_ARGUMENT', `--${flag.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} needs a whole number`);
          policy[key] = n;
        }
      }
      const r = await apiClient(cmd, io).post<PruneResult>('/v1/prune', { vm, dryRun: Boolean(opts.dryRun), ...policy });
      if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
      for (const k of r.keep) io.stdout(`keep    ${vm}@${k.id}  (${k.reasons.join(', ')})\n`);
      for (const x of r.remove) io.stdout(`${r.dryRun ? 'would remove' : 'remove'}  ${vm}@${x.id}\n`);
      io.stdout(r.dryRun ? `dry run: ${r.remove.length} point(s) would be removed\n` : `${r.removed.length} point(s) removed; run 'rebound gc' to free their chunks\n`);
    });

  program
    .command('gc')
    .description('delete chunks no restore point, export or running backup uses (mark and sweep; safe while serving)')
    .option('--json', 'print the result as JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const client = apiClient(cmd, io);
      const job = await followJob(client, await client.post<JobInfo>('/v1/gc', {}), io, { total: 'total', done: 'done' });
      const r = job.result as GcResult;
      if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
      io.stdout(`gc: ${r.scannedChunks} chunks scanned, ${r.markedChunks} in use, ${r.removedChunks} removed (${formatSize(r.removedBytes)} freed) in ${(r.durationMs / 1000).toFixed(1)} s\n`);
    });

  const repo = program.command('repo').description('repository maintenance');
  repo
    .command('reindex')
    .description('rebuild the catalog from the restore point files (the files are the source of truth)')
    .action(async (_o: unknown, cmd: Command) => {
      const r = await apiClient(cmd, io).post<{ points: number }>('/v1/repo/reindex');
      io.stdout(`catalog rebuilt: ${r.points} restore point(s)\n`);
    });
  repo
    .command('init')
    .description(
      'link the data directory (--data) to a repository in an S3 bucket, creating the repository (and the bucket) if needed or joining the one there; ' +
        '--encrypt KEYFILE encrypts a new repository. Without --s3, --encrypt KEYFILE creates an encrypted local repository in DATA/repo. Run before `serve` (docs/s3.md)',
    )
    .option('--s3 <url>', 'the S3 endpoint, http(s)://HOST[:PORT] (AWS: https://s3.REGION.amazonaws.com)')
    .option('--bucket <name>', 'the bucket (with --s3)')
    .option('--prefix <prefix>', 'a key prefix inside the bucket (several repositories in one bucket)')
    .option('--region <region>', 'the region (default $AWS_REGION or us-east-1; any string for Ceph RGW and MinIO)')
    .option('--virtual-host', 'virtual-host addressing (BUCKET.HOST) instead of path-style (HOST/BUCKET)')
    .option('--storage-class <class>', 'storage class of new objects (archive classes GLACIER and DEEP_ARCHIVE are refused)')
    .option('--profile <name>', 'AWS profile for the credentials (default: the AWS_* variables, then the default profile)')
    .option('--access-key-id <id>', 'access key stored in DATA/repo/s3.json (mode 600), instead of the AWS_* variables or a profile')
    .option('--secret-access-key <key>', 'secret key for --access-key-id')
    .option('--chunk-size <size>', 'chunk size of a new repository (e.g. 1M)')
    .option('--encrypt <keyfile>', 'encrypt the repository with this key file (rebound repo keygen FILE): AES-256-GCM, keyed chunk names; joining an encrypted repository needs its key. Losing the key loses the repository (docs/s3.md)')
    .option('--json', 'print the result as JSON')
    .action(async (opts: { s3?: string; bucket?: string; prefix?: string; region?: string; virtualHost?: boolean; storageClass?: string; profile?: string; accessKeyId?: string; secretAccessKey?: string; chunkSize?: string; encrypt?: string; json?: boolean }, cmd: Command) => {
      const global = cmd.optsWithGlobals<{ data?: string }>();
      const dataDir = path.resolve(io.cwd, global.data ?? io.env.REBOUND_DATA ?? './rebound-data');
      const keyFile = opts.encrypt === undefined ? undefined : path.resolve(io.cwd, opts.encrypt);
      const chunkSize = opts.chunkSize === undefined ? undefined : parseSize(opts.chunkSize);
      if (opts.s3 === undefined) {
        const s3Only = (['bucket', 'prefix', 'region', 'virtualHost', 'storageClass', 'profile', 'accessKeyId', 'secretAccessKey'] as const).filter((k) => opts[k] !== undefined);
        if (s3Only.length) throw new ReboundError('ERR_INVALID_ARGUMENT', `--${s3Only[0]!.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} needs --s3 URL`);
        if (!keyFile) throw new ReboundError('ERR_INVALID_ARGUMENT', 'repo init needs --s3 URL --bucket B (a repository in a bucket) or --encrypt KEYFILE (an encrypted local repository; a plain one is created by `serve`)');
        const { initLocalRepository } = await import('../../repo/repository.js');
        const config = initLocalRepository(dataDir, { chunkSize, keyFile });
        if (opts.json) return io.stdout(JSON.stringify({ created: true, dir: path.join(dataDir, 'repo'), config }, null, 2) + '\n');
        io.stdout(
          `created the local repository ${path.join(dataDir, 'repo')} (chunk size ${formatSize(config.chunkSize)}, ${config.codec}, encrypted (AES-256-GCM, key fingerprint ${config.encryption!.fingerprint}, key file ${keyFile}))\n` +
            `keep a copy of ${keyFile} somewhere safe: without it nothing in the repository can be read\n`,
        );
        return;
      }
      if (opts.bucket === undefined) throw new ReboundError('ERR_INVALID_ARGUMENT', '--s3 needs --bucket NAME');
      const link = makeLink({
        url: opts.s3,
        bucket: opts.bucket,
        prefix: opts.prefix,
        region: opts.region,
        virtualHost: opts.virtualHost,
        storageClass: opts.storageClass,
        profile: opts.profile,
        accessKeyId: opts.accessKeyId,
        secretAccessKey: opts.secretAccessKey,
      });
      // The AWS_* variables of this command's environment (not stored; the daemon reads its own).
      const env = io.env;
      const credentials =
        env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY
          ? { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) }
          : undefined;
      // Loaded here: the AWS SDK is needed by `repo init --s3` only, not at every CLI start.
      const { initS3Repository } = await import('../../repo/s3-init.js');
      const r = await initS3Repository(dataDir, link, { chunkSize, credentials, keyFile });
      if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
      const enc = r.config.encryption ? `, encrypted (AES-256-GCM, key fingerprint ${r.config.encryption.fingerprint}, key file ${keyFile})` : '';
      io.stdout(
        `${r.created ? 'created the repository' : 'joined the existing repository'} ${r.url} (chunk size ${formatSize(r.config.chunkSize)}, ${r.config.codec}${enc}); ` +
          `gateway ${r.gateway}; data directory ${dataDir}\n`,
      );
      if (r.created && r.config.encryption) io.stdout(`keep a copy of ${keyFile} somewhere safe: without it nothing in the repository can be read\n`);
    });
  repo
    .command('keygen')
    .description('write a new repository key file for repo init --encrypt: 32 random bytes, mode 600; never overwrites a file. Prints the key\'s fingerprint (the key itself is never shown)')
    .argument('<file>', 'the key file to create')
    .action(async (file: string) => {
      const target = path.resolve(io.cwd, file);
      const { generateKeyFile } = await import('../../repo/repo-crypto.js');
      const fingerprint = generateKeyFile(target);
      io.stdout(`wrote ${target} (mode 600), key fingerprint ${fingerprint}\nkeep a copy somewhere safe: an encrypted repository cannot be read without its key\n`);
    });
  repo
    .command('info')
    .description('show the repository: backend (local or S3), location, format, chunk size, codec, encryption and key fingerprint, memory and disk cache use and hit rates, S3 requests')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const r = await apiClient(cmd, io).get<RepoInfo>('/v1/repo');
      if (opts.json) return io.stdout(JSON.stringify(r, null, 2) + '\n');
      const rate = (x: number | null): string => (x === null ? 'no reads yet' : `${(x * 100).toFixed(1)}% hits`);
      const lines = [
        `backend: ${r.backend}${r.s3 ? ` ${r.s3.url} (endpoint ${r.s3.endpoint}, ${r.s3.addressing}-style, ${r.s3.storageClass}; gateway ${r.s3.gateway})` : ` ${r.dir}`}`,
        `format: version ${r.version}, chunk size ${formatSize(r.chunkSize)}, codec ${r.codec}, created ${r.createdAt}`,
        r.encryption
          ? `encryption: ${r.encryption.algorithm.toUpperCase()}, chunk names ${r.encryption.chunkIds.toUpperCase()}, key fingerprint ${r.encryption.fingerprint}`
          : 'encryption: none',
        `memory cache: ${formatSize(r.cache.bytes)} of ${formatSize(r.cache.maxBytes)} (${r.cache.chunks} chunks), ${rate(r.cache.hitRate)}`,
      ];
      if (r.backend === 's3') {
        const d = r.diskCache;
        lines.push(d ? `disk cache: ${formatSize(d.bytes)} of ${formatSize(d.maxBytes)} (${d.chunks} chunks) in ${d.dir}, ${rate(d.hitRate)}${d.rejected ? `, ${d.rejected} bad cached chunk(s) fetched again` : ''}` : 'disk cache: off');
        const q = r.s3!.requests;
        lines.push(`S3 requests: ${q.get} GET, ${q.head} HEAD, ${q.put} PUT, ${q.delete} DELETE, ${q.list} LIST, ${q.retries} retries; ${formatSize(q.bytesIn)} in, ${formatSize(q.bytesOut)} out`);
      }
      io.stdout(lines.join('\n') + '\n');
    });
}

interface CacheInfo {
  bytes: number;
  maxBytes: number;
  chunks: number;
  hitRate: number | null;
}

interface RepoInfo {
  backend: 'local' | 's3';
  dir: string;
  version: number;
  chunkSize: number;
  codec: string;
  createdAt: string;
  encryption?: { algorithm: string; chunkIds: string; kdf: string; fingerprint: string } | null;
  cache: CacheInfo;
  diskCache?: (CacheInfo & { dir: string; rejected: number }) | null;
  s3?: { url: string; endpoint: string; addressing: string; storageClass: string; gateway: string; requests: Record<'get' | 'head' | 'put' | 'delete' | 'list' | 'retries' | 'bytesIn' | 'bytesOut', number> };
}
