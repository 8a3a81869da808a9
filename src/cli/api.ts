/**
 * The API client of the CLI's client commands, from the global options and the environment:
 *  - server: --server URL, $REBOUND_SERVER, or http://127.0.0.1:10810;
 *  - CA for https://: --ca-cert FILE or $REBOUND_CA_CERT;
 *  - token, the first of: --token-file FILE, $REBOUND_TOKEN, $REBOUND_TOKEN_FILE, else the first
 *    admin token of the data directory (--data DIR, $REBOUND_DATA, or ./rebound-data:
 *    DATA/auth/admin.token), when this user can read it (root on the gateway) and the server is
 *    on loopback or is the one the data directory's lock names (the daemon's own token is not
 *    sent anywhere else).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { ApiClient, DEFAULT_SERVER_URL } from '../api/client.js';
import { adminTokenPath } from '../auth/token-store.js';
import { CONFIG_SCHEMA } from '../config/fields.js';
import { readLock, LOCK_FILE } from '../daemon/data-dir.js';
import { ReboundError } from '../errors.js';
import type { CliIo } from './io.js';

export interface GlobalOptions {
  server?: string;
  tokenFile?: string;
  caCert?: string;
  data?: string;
}

/** The API client for the global options (see above). */
export function apiClient(cmd: Command, io: CliIo): ApiClient {
  const opts = cmd.optsWithGlobals<GlobalOptions>();
  const server = opts.server ?? io.env.REBOUND_SERVER ?? DEFAULT_SERVER_URL;
  const { token, tried } = resolveToken(opts, io, server);
  const caFile = opts.caCert ?? io.env.REBOUND_CA_CERT;
  const ca = caFile ? readFileFor(path.resolve(io.cwd, caFile), opts.caCert ? '--ca-cert' : 'REBOUND_CA_CERT') : undefined;
  const authHint =
    (token ? `The token the CLI sent came from ${tried[tried.length - 1]}. ` : `The CLI found no token (${tried.join('; ')}). `) +
    'Pass one with --token-file FILE, REBOUND_TOKEN=TOKEN or REBOUND_TOKEN_FILE=FILE; on the gateway the first admin token is ' +
    'DATA/auth/admin.token (readable by root; the CLI reads it itself given --data DATA or REBOUND_DATA). ' +
    'An admin makes more with `rebound token create --name NAME --role viewer|operator|admin`.';
  return new ApiClient(server, { ...(token ? { token } : {}), ...(ca ? { ca } : {}), authHint });
}

/** The token to send and where the CLI looked (the last entry names the source used). */
export function resolveToken(opts: GlobalOptions, io: Pick<CliIo, 'env' | 'cwd'>, server: string): { token?: string; tried: string[] } {
  if (opts.tokenFile) return { token: readToken(path.resolve(io.cwd, opts.tokenFile), '--token-file'), tried: [`--token-file ${opts.tokenFile}`] };
  if (io.env.REBOUND_TOKEN) return { token: io.env.REBOUND_TOKEN.trim(), tried: ['REBOUND_TOKEN'] };
  if (io.env.REBOUND_TOKEN_FILE) {
    return { token: readToken(path.resolve(io.cwd, io.env.REBOUND_TOKEN_FILE), 'REBOUND_TOKEN_FILE'), tried: [`REBOUND_TOKEN_FILE ${io.env.REBOUND_TOKEN_FILE}`] };
  }
  const dataDir = path.resolve(io.cwd, opts.data ?? io.env.REBOUND_DATA ?? CONFIG_SCHEMA.dataDir.default);
  const file = adminTokenPath(dataDir);
  let token: string;
  try {
    token = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : 'is not readable by this user';
    return { tried: [`no --token-file, REBOUND_TOKEN or REBOUND_TOKEN_FILE`, `${file} ${why}`] };
  }
  if (!token) return { tried: [`${file} is empty`] };
  if (!isOwnServer(server, dataDir)) {
    return { tried: [`${file} is not sent to ${server}: it is neither on loopback nor the address in ${path.join(dataDir, LOCK_FILE)}`] };
  }
  return { token, tried: [file] };
}

function isOwnServer(server: string, dataDir: string): boolean {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    return false;
  }
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)) return true;
  const lock = readLock(path.join(dataDir, LOCK_FILE));
  return lock?.http !== undefined && lock.http.toLowerCase() === url.host.toLowerCase();
}

function readToken(file: string, source: string): string {
  const token = readFileFor(file, source).toString('utf8').trim();
  if (!token) throw new ReboundError('ERR_INVALID_ARGUMENT', `${source} ${file} is empty`);
  return token;
}

function readFileFor(file: string, source: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `cannot read ${source} ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** Prints rows as aligned columns. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}
