/** Runs the CLI in-process and captures its output. */
import { main } from '../../src/cli/main.js';
import type { CliIo } from '../../src/cli/io.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function cliIo(overrides: Partial<CliIo> = {}): { io: CliIo; out: () => string; err: () => string } {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
    env: {},
    cwd: process.cwd(),
    stopSignal: new AbortController().signal,
    isTTY: false,
    ...overrides,
  };
  return { io, out: () => stdout, err: () => stderr };
}

export async function cli(argv: string[], overrides: Partial<CliIo> = {}): Promise<CliRun> {
  const c = cliIo(overrides);
  const code = await main(argv, c.io);
  return { code, stdout: c.out(), stderr: c.err() };
}
