import type { Command } from 'commander';
import { apiClient } from '../api.js';
import type { CliIo } from '../io.js';

interface Health {
  status: string;
  version: string;
  pid: number;
  uptimeSeconds: number;
  exports: number;
  endpoints: { nbd: string[]; nbdSocket: string[]; http?: string; nfs?: string[]; portmap?: string[] };
}

export function registerStatus(program: Command, io: CliIo): void {
  program
    .command('status')
    .description("show whether the daemon is up, where it listens and how many exports it serves")
    .option('--json', 'print the JSON answer of GET /v1/health')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const h = await apiClient(cmd, io).get<Health>('/v1/health');
      if (opts.json) {
        io.stdout(JSON.stringify(h, null, 2) + '\n');
        return;
      }
      io.stdout(
        `rebound ${h.version}: ${h.status}, pid ${h.pid}, up ${h.uptimeSeconds}s, ${h.exports} export(s)\n` +
          `  NBD:  ${[...h.endpoints.nbd, ...h.endpoints.nbdSocket].join(', ') || 'none'}\n` +
          `  HTTP: ${h.endpoints.http ?? 'off'}\n` +
          (h.endpoints.nfs?.length ? `  NFS:  ${h.endpoints.nfs.join(', ')} (portmapper ${h.endpoints.portmap?.join(', ') || 'off'})\n` : ''),
      );
    });

  program
    .command('config')
    .description("print the running daemon's effective configuration (JSON)")
    .action(async (_opts: unknown, cmd: Command) => {
      const c = await apiClient(cmd, io).get<Record<string, unknown>>('/v1/config');
      io.stdout(JSON.stringify(c, null, 2) + '\n');
    });
}
