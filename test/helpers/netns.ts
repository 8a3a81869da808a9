/**
 * A private network namespace for tests that need fixed ports (the portmapper on 111, which QEMU's
 * nfs driver and libnfs always ask). A holder process (`unshare --net sleep infinity`) keeps the
 * namespace alive; `run`/`spawn` enter it with `nsenter -t PID -n`. Needs root (CI and this
 * machine run tests as root); missingNetNs() skips with a reason elsewhere, and fails under CI.
 * The default namespace never gets port 111 bound by tests.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import { missingPeers } from './peers.js';
import { run, runOk, type RunOptions, type RunResult } from './run.js';

export interface NetNs {
  pid: number;
  /** Runs a command inside the namespace to completion. */
  run(cmd: string, args: string[], opts?: RunOptions): Promise<RunResult>;
  runOk(cmd: string, args: string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts a long-running command inside the namespace (killed by close()). */
  spawn(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  /** Kills every process started here and the holder. Idempotent. */
  close(): Promise<void>;
}

export function missingNetNs(): string[] {
  const missing = missingPeers('unshare', 'nsenter', 'ip');
  if (missing.length === 0 && process.getuid?.() !== 0) {
    if (process.env.CI) throw new Error('CI must run the network-namespace tests as root');
    console.warn('skipping: network namespaces need root');
    missing.push('root');
  }
  return missing;
}

export async function createNetNs(): Promise<NetNs> {
  const holder = spawn('unshare', ['--net', 'sleep', 'infinity'], { stdio: 'ignore' });
  const pid = holder.pid!;
  const self = fs.readlinkSync('/proc/self/ns/net');
  for (let i = 0; i < 200; i++) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/ns/net`) !== self) break;
    } catch {
      // not started yet
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  const children = new Set<ChildProcess>();
  const ns = (cmd: string, args: string[]): string[] => ['-t', String(pid), '-n', cmd, ...args];
  let closed = false;
  const netns: NetNs = {
    pid,
    run: (cmd, args, opts) => run('nsenter', ns(cmd, args), opts),
    runOk: (cmd, args, opts) => runOk('nsenter', ns(cmd, args), opts),
    spawn: (cmd, args, opts = {}) => {
      const c = spawn('nsenter', ns(cmd, args), opts);
      children.add(c);
      c.on('exit', () => children.delete(c));
      return c;
    },
    close: async () => {
      if (closed) return;
      closed = true;
      const exits = [...children].map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined));
      for (const c of children) c.kill('SIGKILL');
      holder.kill('SIGKILL');
      await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 5000))]);
    },
  };
  process.once('exit', () => {
    for (const c of children) c.kill('SIGKILL');
    holder.kill('SIGKILL');
  });
  try {
    await netns.runOk('ip', ['link', 'set', 'lo', 'up']);
  } catch (err) {
    await netns.close();
    throw err;
  }
  return netns;
}
