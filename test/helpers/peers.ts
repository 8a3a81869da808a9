/**
 * Real peers (qemu-img, nbdinfo, fio, ...) that interop tests need. A missing peer skips the tests
 * with a printed reason on a developer machine, and fails the run under CI (CI=true), where
 * tools/setup.sh installed them all: CI must skip nothing.
 */
import { spawnSync } from 'node:child_process';

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** nbdsh needs Debian's python3 (python3-libnbd), whatever python3 comes first on PATH. */
export const NBDSH = ['/usr/bin/python3', '-m', 'nbd'];
export function hasNbdsh(): boolean {
  return spawnSync(NBDSH[0]!, [...NBDSH.slice(1), '--version'], { stdio: 'ignore' }).status === 0;
}

/** Returns the names of missing peers; under CI a missing peer throws instead. */
export function missingPeers(...cmds: string[]): string[] {
  const missing = cmds.filter((c) => (c === 'nbdsh' ? !hasNbdsh() : !hasCommand(c)));
  if (missing.length && process.env.CI) {
    throw new Error(`CI is missing required peers: ${missing.join(', ')} (tools/setup.sh should install them)`);
  }
  if (missing.length) console.warn(`skipping: missing peers ${missing.join(', ')} (run tools/setup.sh)`);
  return missing;
}
