import type { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { adminTokenPath } from '../../auth/token-store.js';
import { nbdUris } from '../../nbd/client.js';
import { addConfigOptions } from '../../config/cli-options.js';
import { loadConfig, plainConfig, validateConfig, type ConfigLayer, type ValidatedConfig } from '../../config/schema.js';
import type { Daemon } from '../../daemon/daemon.js';
import { demoExports } from '../../daemon/demo.js';
import { createLogger } from '../../util/log.js';
import { formatSize } from '../../util/size.js';
import type { CliIo } from '../io.js';

export function registerServe(program: Command, io: CliIo, setExit: (code: number) => void): void {
  const serve = program.command('serve').description('run the rebound daemon: NBD server and HTTP API over one data directory');
  const readFlags = addConfigOptions(serve);
  serve
    .option('--print-config', 'print the effective configuration as JSON and exit without serving')
    .addHelpText(
      'after',
      '\nSIZE takes a whole number of bytes or a suffix: 4096, 64K, 4M, 1.5G, 2T (powers of 1024).\n' +
        'Every setting can also be given in DATA/config.json (under the key `rebound config` prints) and,\n' +
        'unless it is a list, in an environment variable; later sources win: defaults, config.json,\n' +
        'environment, flags. docs/config.md describes them all.\n' +
        'SIGINT/SIGTERM drain in-flight I/O and stop; a second signal exits at once.\n' +
        '\nExamples:\n' +
        '  rebound serve --demo\n' +
        '  rebound serve --export vm1=/backups/vm1.raw,desc="vm1 from last night" --nbd 0.0.0.0:10809\n' +
        '  rebound serve --nbd-socket /run/rebound.sock --http off --export disk=/dev/vg0/snap\n' +
        '  rebound serve --nfs 0.0.0.0:2049 --cache-size 1G --qos-bandwidth 200M',
    )
    .action(async (opts: { printConfig?: boolean }) => {
      // --data is also a global option (client commands find the admin token with it), and
      // commander hands it to the program wherever it is typed.
      const flags = readFlags();
      const globalData = program.opts<{ data?: string }>().data;
      if (globalData !== undefined && flags.values.dataDir === undefined) flags.values.dataDir = globalData;
      const config = buildConfig(flags, io);
      if (opts.printConfig) {
        io.stdout(JSON.stringify(plainConfig(config), null, 2) + '\n');
        return;
      }
      const log = createLogger({ level: config.logLevel, format: config.logFormat, write: (l) => io.stderr(l + '\n') });
      // The daemon (fastify, level, the front ends, the AWS SDK...) loads only here: every client
      // command shares this module and would otherwise pay for it at start-up.
      const { Daemon } = await import('../../daemon/daemon.js');
      const daemon = await Daemon.start(config, log);
      io.stdout(banner(daemon));
      if (!io.stopSignal.aborted) {
        await new Promise<void>((resolve) => io.stopSignal.addEventListener('abort', () => resolve(), { once: true }));
      }
      await daemon.close();
      setExit(0);
    });
}

function buildConfig(flags: ConfigLayer, io: CliIo): ValidatedConfig {
  const config = loadConfig(flags, io.env, io.cwd);
  if (config.demo) config.exports = [...demoExports(), ...config.exports];
  return validateConfig(config, io.cwd);
}

function banner(daemon: Daemon): string {
  const ep = daemon.endpoints;
  const exports = daemon.catalog.view('nbd').names();
  const lines = [`rebound is serving ${exports.length} export(s) from ${daemon.config.dataDir}`];
  const width = Math.max(12, ...exports.map((e) => e.name.length));
  for (const { name, entry } of exports) {
    const uri = nbdUris(name, ep)[0] ?? '(no NBD listener)';
    lines.push(`  ${name.padEnd(width)} ${formatSize(entry.size).padStart(9)}  ${entry.writable ? 'read-write' : 'read-only '}  ${uri}`);
  }
  if (exports.length === 0) lines.push('  (no exports yet: back up a VM with `rebound backup`, or start with --export NAME=PATH)');
  lines.push(`NBD: ${nbdUris('', ep).join('  ') || 'no listener'}`);
  if (daemon.config.nbdTls !== 'off') {
    lines.push(
      `NBD TLS: ${daemon.config.nbdTls}${daemon.config.nbdTls === 'require' ? ' (plain-text clients get nothing)' : ''}: ` +
        "libnbd clients use nbds:// URIs (…?tls-certificates=DIR or nbds://USER@…?tls-psk-file=FILE), QEMU --object tls-creds-x509 or tls-creds-psk " +
        'with tls-creds= on the drive (docs/security.md, TLS for NBD)',
    );
  }
  if (ep.nfs?.length) {
    const xen = daemon.config.nfsXenFormat !== 'off' ? ', XenServer SRs nfs://HOST/xen/SR-UUID/' : '';
    lines.push(`NFS: datastore at ${ep.nfs.join('  ')} (portmapper ${ep.portmap?.join('  ') || 'off'}): nfs://HOST/sessions/NAME/DISK-flat.vmdk, nfs://HOST/backups/VM/POINT/${xen}`);
  }
  if (ep.iscsi?.length) {
    lines.push(`iSCSI: portal at ${ep.iscsi.join('  ')}: iqn.2026-12.org.rebound:session.NAME and :point.VM.POINT, LUN n = disk n (iscsi://HOST/IQN/LUN)`);
  }
  if (daemon.config.fuse !== 'off') lines.push(`FUSE: file tree at ${daemon.config.fuse} (vms/VM/POINT/DISK.raw, DISK.parts/N, sessions/NAME/DISK.raw)`);
  // QEMU takes no nbds:// URI: with TLS optional, the hints use the plain form.
  const first = exports[0] && nbdUris(exports[0].name, { ...ep, nbdTls: 'off' })[0];
  if (first && daemon.config.nbdTls !== 'require') {
    lines.push('Try:', `  qemu-img info ${first}`, `  nbdinfo --map ${first}`);
  }
  if (ep.http) {
    const api = `${daemon.config.httpTls ? 'https' : 'http'}://${ep.http}`;
    const ca = daemon.config.httpTls && daemon.config.tlsCertDir !== 'off' ? ` --ca-cert ${path.join(daemon.config.tlsCertDir, 'ca-cert.pem')}` : '';
    lines.push(
      `  rebound exports --server ${api}${ca}`,
      `  rebound recover VM --server ${api}${ca}      (instant recovery of a backed-up VM, e.g. demo)`,
      `HTTP API: ${api}/v1/exports`,
    );
    const tokenFile = adminTokenPath(daemon.config.dataDir);
    if (fs.existsSync(tokenFile)) lines.push(`API token (admin): ${tokenFile} (the CLI reads it when run by this user with the same --data; clients send Authorization: Bearer TOKEN)`);
  }
  lines.push('Press Ctrl-C to stop.');
  return lines.join('\n') + '\n';
}
