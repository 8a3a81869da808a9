/**
 * Runs the built `rebound serve` as a real child process (dist/ must be built: tools/test.sh does).
 * Waits for its banner and parses the listen addresses from it. Unless `args` set them, the daemon
 * may back up from and restore/migrate into the OS temp dir (--source-dir, --target-dir), where
 * tests keep their files. With an HTTP listener, the daemon's admin token (DATA/auth/admin.token)
 * comes back as `token`/`tokenFile`: pass `--token-file` to the CLI, `authorization` to fetch/curl.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(REPO, 'dist/cli/main.js');

export function assertBuilt(): void {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' (tools/test.sh does it)`);
}

export interface DaemonProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** First NBD TCP address (HOST:PORT) and HTTP address from the banner. */
  nbd: string;
  http: string | undefined;
  /** The API base URL (http:// or https://), when HTTP is on. */
  url: string | undefined;
  /** The data directory and its admin token (first start), when HTTP is on. */
  dataDir: string;
  tokenFile: string;
  token: string | undefined;
  /** `{authorization: 'Bearer TOKEN'}` with the admin token. */
  auth: Record<string, string>;
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

export async function startDaemonProcess(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<DaemonProcess> {
  assertBuilt();
  const policy = [
    ...(args.includes('--source-dir') ? [] : ['--source-dir', os.tmpdir()]),
    ...(args.includes('--target-dir') ? [] : ['--target-dir', os.tmpdir()]),
  ];
  const child = spawn(process.execPath, [CLI, 'serve', ...args, ...policy], {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  while (!out.includes('Press Ctrl-C')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`daemon did not start (exit ${child.exitCode}):\n${out}\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const nbd = /nbds?:\/\/([^/\s]+)\//.exec(out)?.[1] ?? '';
  const api = /HTTP API: (https?):\/\/([^/\s]+)\//.exec(out);
  const http = api?.[2];
  const cwd = opts.cwd ?? process.cwd();
  const dataArg = args.lastIndexOf('--data');
  const dataDir = path.resolve(cwd, dataArg >= 0 ? args[dataArg + 1]! : (opts.env?.REBOUND_DATA ?? process.env.REBOUND_DATA ?? 'rebound-data'));
  const tokenFile = path.join(dataDir, 'auth', 'admin.token');
  const token = http && fs.existsSync(tokenFile) ? fs.readFileSync(tokenFile, 'utf8').trim() : undefined;
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    nbd,
    http,
    url: api ? `${api[1]}://${api[2]}` : undefined,
    dataDir,
    tokenFile,
    token,
    auth: token ? { authorization: `Bearer ${token}` } : {},
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}
