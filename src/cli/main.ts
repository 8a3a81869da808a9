#!/usr/bin/env node
/**
 * The `rebound` command. `main(argv, io)` returns an exit code and touches the outside world only
 * through `io`, so tests run it in-process. `serve` runs the daemon; every other command is a thin
 * client of the daemon's HTTP API (--server URL, or $REBOUND_SERVER), authenticated with a token
 * (--token-file, $REBOUND_TOKEN, $REBOUND_TOKEN_FILE, or the data directory's admin token: cli/api.ts).
 *
 * Exit codes: 0 success, 1 failure (the message says why), 2 usage error.
 */
import { Command, CommanderError } from 'commander';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { isReboundError } from '../errors.js';
import { VERSION } from '../version.js';
import { registerServe } from './commands/serve.js';
import { registerExports } from './commands/exports.js';
import { registerStatus } from './commands/status.js';
import { registerRepo } from './commands/repo.js';
import { registerSessions } from './commands/sessions.js';
import { registerMount } from './commands/mount.js';
import { registerToken } from './commands/token.js';
import { registerVerify } from './commands/verify.js';
import type { CliIo } from './io.js';
import { processIo } from './io.js';

export async function main(argv: string[], io: CliIo): Promise<number> {
  const program = new Command('rebound')
    .description(
      'rebound: instant-recovery storage gateway.\n' +
        'Publishes disk images and backups to hypervisors over NBD, at once, without restoring them.',
    )
    .version(VERSION, '-V, --version')
    .option('--server <url>', 'daemon API URL for client commands, http:// or https:// (env REBOUND_SERVER)', io.env.REBOUND_SERVER)
    .option('--token-file <file>', 'file holding the API token for client commands (env REBOUND_TOKEN_FILE, or the token itself in REBOUND_TOKEN; default: DATA/auth/admin.token when readable)')
    .option('--ca-cert <file>', 'PEM CA certificate to trust for an https:// server (env REBOUND_CA_CERT)')
    .option('--data <dir>', 'data directory: where `serve` keeps its state and where client commands look for the admin token (env REBOUND_DATA; default ./rebound-data)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout(s), writeErr: (s) => io.stderr(s) })
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      '\nQuick start:\n' +
        '  rebound serve --demo                     start the gateway with demo exports\n' +
        '  rebound serve --export vm1=/images/vm1.raw   publish a raw image read-only\n' +
        '  rebound exports                          list what the daemon serves\n' +
        '  rebound token create --name ci --role operator   an API token for another user or host\n' +
        '\nRun `rebound COMMAND --help` for the options of a command.',
    );

  let exitCode = 0;
  const setExit = (code: number): void => {
    exitCode = code;
  };
  registerServe(program, io, setExit);
  registerExports(program, io);
  registerStatus(program, io);
  registerRepo(program, io);
  registerVerify(program, io);
  registerSessions(program, io);
  registerMount(program, io);
  registerToken(program, io);

  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with exit code 0; usage errors with 1 -> 2.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (isReboundError(err)) {
      io.stderr(`rebound: ${err.message}\n`);
      return 1;
    }
    io.stderr(`rebound: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

function isEntryPoint(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2), processIo()).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`rebound: ${String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
