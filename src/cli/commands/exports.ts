import type { Command } from 'commander';
import { formatSize } from '../../util/size.js';
import { apiClient, table } from '../api.js';
import type { CliIo } from '../io.js';

interface ExportRow {
  name: string;
  overlay?: { allocatedBytes: number; maxBytes: number | null };
  size: number;
  readOnly: boolean;
  connections: number;
  source: string;
  uris: string[];
}

export function registerExports(program: Command, io: CliIo): void {
  program
    .command('exports')
    .description('list the exports the daemon serves, with their NBD URIs')
    .option('--json', 'print the full JSON answer of GET /v1/exports')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const res = await apiClient(cmd, io).get<{ exports: ExportRow[]; defaultExport: string | null }>('/v1/exports');
      if (opts.json) {
        io.stdout(JSON.stringify(res, null, 2) + '\n');
        return;
      }
      if (res.exports.length === 0) {
        io.stdout('no exports (start the daemon with --export NAME=PATH, or --demo)\n');
        return;
      }
      io.stdout(
        table(
          ['NAME', 'SIZE', 'MODE', 'OVERLAY', 'CONN', 'URI'],
          res.exports.map((e) => [
            e.name + (e.name === res.defaultExport ? ' *' : ''),
            formatSize(e.size),
            e.readOnly ? 'ro' : e.overlay ? 'cow' : 'rw',
            e.overlay
              ? formatSize(e.overlay.allocatedBytes) + (e.overlay.maxBytes !== null ? ` / ${formatSize(e.overlay.maxBytes)}` : '')
              : '-',
            String(e.connections),
            e.uris[0] ?? '',
          ]),
        ),
      );
    });
}
