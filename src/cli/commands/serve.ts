import { Command, Option } from 'commander';
import { nbdUris } from '../../nbd/client.js';
import { defaultConfig, readConfigFile, validateConfig, type DaemonConfig } from '../../config/schema.js';
import { EXPORT_OPTIONS } from '../../config/export-spec.js';
import { Daemon } from '../../daemon/daemon.js';
import { demoExports } from '../../daemon/demo.js';
import { createLogger, type LogLevel } from '../../util/log.js';
import { formatSize } from '../../util/size.js';
import type { CliIo } from '../io.js';
import path from 'node:path';

interface ServeOptions {
  data?: string;
  nbd?: string[];
  nbdSocket?: string[];
  http?: string;
  export?: string[];
  demo?: boolean;
  fuse?: string;
  nfs?: string[];
  portmap?: string;
  nfsClient?: string[];
  nfsReadOnly?: boolean;
  maxInflight?: string;
  shutdownTimeout?: string;
  logLevel?: LogLevel;
  logFormat?: 'text' | 'json';
  printConfig?: boolean;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export function registerServe(program: Command, io: CliIo, setExit: (code: number) => void): void {
  const d = defaultConfig({});
  program
    .command('serve')
    .description('run the rebound daemon: NBD server and HTTP API over one data directory')
    .option('--data <dir>', `data directory; one daemon per directory (default ${d.dataDir}, env REBOUND_DATA)`)
    .option('--nbd <host:port>', `NBD TCP listener, repeatable; 'none' for no TCP listener (default ${d.nbd[0]})`, collect)
    .option('--nbd-socket <path>', 'NBD listener on a Unix socket, repeatable', collect)
    .option('--http <host:port>', `HTTP API listener, or 'off' (default ${d.http})`)
    .option(
      '--export <spec>',
      'publish an export, repeatable. SPEC is NAME=SOURCE[,OPTION...]; SOURCE is a raw image file or ' +
        'block device (served read-only) or memory:SIZE (volatile, writable); OPTIONS: ' +
        Object.values(EXPORT_OPTIONS).join('; '),
      collect,
    )
    .option('--demo', 'back up a demo disk into the repository (VM demo) and publish it: demo@latest/disk0 (read-only) and recovered (writable, copy-on-write)')
    .option('--fuse <dir>', 'mount the read-only file tree at DIR: DIR/vms/VM/POINT/DISK.raw, DISK.parts/N (partitions), config/, DIR/sessions/NAME/DISK.raw; loop-mount a partition to copy files out (default off)')
    .option('--nfs <host:port>', 'NFSv3 datastore listener (MOUNT + NFS v3 on one port, e.g. 0.0.0.0:2049), repeatable: /sessions/NAME/ and /backups/VM/POINT/ for ESXi and any NFS client (default off)', collect)
    .option('--portmap <port>', `portmapper for the NFS datastore: PORT, HOST:PORT or 'off' (default ${d.portmap}: ESXi, QEMU and libnfs ask port 111)`)
    .option('--nfs-client <addr>', 'client address or subnet (ADDR/BITS) allowed to mount the NFS datastore, repeatable (default: all)', collect)
    .option('--nfs-read-only', 'export the NFS datastore read-only')
    .option('--max-inflight <n>', `requests processed at once per NBD connection (default ${d.nbdMaxInflight})`)
    .option('--shutdown-timeout <ms>', `how long shutdown waits for in-flight I/O, in ms (default ${d.shutdownTimeoutMs})`)
    .addOption(new Option('--log-level <level>', 'log verbosity').choices(['debug', 'info', 'warn', 'error']))
    .addOption(new Option('--log-format <format>', 'log line format on stderr').choices(['text', 'json']))
    .option('--print-config', 'print the effective configuration as JSON and exit without serving')
    .addHelpText(
      'after',
      '\nSettings may also come from DATA/config.json (same names as `rebound config` prints);\n' +
        'command-line flags win. SIGINT/SIGTERM drain in-flight I/O and stop; a second signal exits at once.\n' +
        '\nExamples:\n' +
        '  rebound serve --demo\n' +
        '  rebound serve --export vm1=/backups/vm1.raw,desc="vm1 from last night" --nbd 0.0.0.0:10809\n' +
        '  rebound serve --nbd-socket /run/rebound.sock --http off --export disk=/dev/vg0/snap',
    )
    .action(async (opts: ServeOptions) => {
      const config = buildConfig(opts, io);
      if (opts.printConfig) {
        const { exportSpecs: _s, ...plain } = config;
        io.stdout(JSON.stringify(plain, null, 2) + '\n');
        return;
      }
      const log = createLogger({ level: config.logLevel, format: config.logFormat, write: (l) => io.stderr(l + '\n') });
      const daemon = await Daemon.start(config, log);
      io.stdout(banner(daemon));
      if (!io.stopSignal.aborted) {
        await new Promise<void>((resolve) => io.stopSignal.addEventListener('abort', () => resolve(), { once: true }));
      }
      await daemon.close();
      setExit(0);
    });
}

function buildConfig(opts: ServeOptions, io: CliIo) {
  const base = defaultConfig(io.env);
  const dataDir = path.resolve(io.cwd, opts.data ?? base.dataDir);
  const merged: DaemonConfig = { ...base, ...readConfigFile(dataDir), dataDir };
  if (opts.nbd) merged.nbd = opts.nbd.filter((a) => a !== 'none');
  if (opts.nbdSocket) merged.nbdSocket = opts.nbdSocket;
  if (opts.http) merged.http = opts.http;
  if (opts.export) merged.exports = [...merged.exports, ...opts.export];
  if (opts.demo) merged.demo = true;
  if (opts.fuse) merged.fuse = opts.fuse;
  if (opts.nfs) merged.nfs = opts.nfs.filter((a) => a !== 'none');
  if (opts.portmap) merged.portmap = opts.portmap;
  if (opts.nfsClient) merged.nfsClients = opts.nfsClient;
  if (opts.nfsReadOnly) merged.nfsReadOnly = true;
  if (opts.maxInflight) merged.nbdMaxInflight = Number(opts.maxInflight);
  if (opts.shutdownTimeout) merged.shutdownTimeoutMs = Number(opts.shutdownTimeout);
  if (opts.logLevel) merged.logLevel = opts.logLevel;
  if (opts.logFormat) merged.logFormat = opts.logFormat;
  if (merged.demo) merged.exports = [...demoExports(), ...merged.exports];
  return validateConfig(merged, io.cwd);
}

function banner(daemon: Daemon): string {
  const ep = daemon.endpoints;
  const exports = daemon.registry.list();
  const lines = [`rebound is serving ${exports.length} export(s) from ${daemon.config.dataDir}`];
  const width = Math.max(12, ...exports.map((e) => e.name.length));
  for (const e of exports) {
    const uri = nbdUris(e.name, ep)[0] ?? '(no NBD listener)';
    lines.push(`  ${e.name.padEnd(width)} ${formatSize(e.device.size).padStart(9)}  ${e.readOnly ? 'read-only ' : 'read-write'}  ${uri}`);
  }
  if (exports.length === 0) lines.push('  (no exports yet: back up a VM with `rebound backup`, or start with --export NAME=PATH)');
  const listeners = [...ep.nbd.map((a) => `nbd://${a}/`), ...ep.nbdSocket.map((p) => `nbd+unix:///?socket=${p}`)];
  lines.push(`NBD: ${listeners.join('  ') || 'no listener'}`);
  if (ep.nfs?.length) {
    lines.push(`NFS: datastore at ${ep.nfs.join('  ')} (portmapper ${ep.portmap?.join('  ') || 'off'}): nfs://HOST/sessions/NAME/DISK-flat.vmdk, nfs://HOST/backups/VM/POINT/`);
  }
  if (daemon.config.fuse !== 'off') lines.push(`FUSE: file tree at ${daemon.config.fuse} (vms/VM/POINT/DISK.raw, DISK.parts/N, sessions/NAME/DISK.raw)`);
  const first = exports[0] && nbdUris(exports[0].name, ep)[0];
  if (first) {
    lines.push('Try:', `  qemu-img info ${first}`, `  nbdinfo --map ${first}`);
  }
  if (ep.http) {
    lines.push(
      `  rebound exports --server http://${ep.http}`,
      `  rebound recover VM --server http://${ep.http}      (instant recovery of a backed-up VM, e.g. demo)`,
      `HTTP API: http://${ep.http}/v1/exports`,
    );
  }
  lines.push('Press Ctrl-C to stop.');
  return lines.join('\n') + '\n';
}
