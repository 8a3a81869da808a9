/** The CLI's window on the world: output streams, environment, and a stop signal for `serve`. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Aborted when the process is asked to stop (SIGINT/SIGTERM); `serve` then shuts down. */
  stopSignal: AbortSignal;
  /** True when stdout is a terminal (progress bars, colours). */
  isTTY: boolean;
}

/** The real process: signals SIGINT/SIGTERM abort `stopSignal`; a second signal exits at once. */
export function processIo(): CliIo {
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      process.stderr.write(`rebound: second ${sig}, exiting without draining\n`);
      process.exit(130);
    }
    controller.abort(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    env: process.env,
    cwd: process.cwd(),
    stopSignal: controller.signal,
    isTTY: Boolean(process.stdout.isTTY),
  };
}
