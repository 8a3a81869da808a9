import type { Command } from 'commander';
import { ApiClient, DEFAULT_SERVER_URL } from '../api/client.js';

/** The API client for the global --server option (or $REBOUND_SERVER, or the default address). */
export function apiClient(cmd: Command): ApiClient {
  const opts = cmd.optsWithGlobals<{ server?: string }>();
  return new ApiClient(opts.server ?? DEFAULT_SERVER_URL);
}

/** Prints rows as aligned columns. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}
