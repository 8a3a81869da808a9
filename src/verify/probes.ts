/**
 * The success signals of a verification boot, each watching one thing QEMU gives:
 *  - SerialWatch: the serial console (a Unix socket QEMU serves): keeps a tail, matches the
 *    expected pattern and the failure patterns line by line, and logs everything to a file;
 *  - probeTcp: a forwarded port "answers" when the guest sends at least one byte: a banner (SSH,
 *    SMTP, FTP send theirs whatever the client says) or a reply to the `HEAD / HTTP/1.0` the probe
 *    sends on connecting (HTTP; many other services answer it with an error line). QEMU's user-mode network accepts the host
 *    side of a forwarded connection before it knows whether the guest listens, so a connection
 *    alone proves nothing; a closed guest port shows as a connection closed without data. A
 *    service that never writes first and ignores that line (RDP) needs a probe script;
 *  - pingAgent: qemu-guest-agent's `guest-ping` over its virtio-serial port;
 *  - runScript: the operator's probe script, its exit code and output tail.
 * Waiting loops run until the caller's AbortSignal (the verification's deadline or its verdict).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export const TAIL_LINES = 40;
/** What a boot that went wrong prints: bootloaders, the kernel, firmware. */
export const DEFAULT_FAIL_PATTERNS = [
  'Booting kernel failed',
  'Invalid or corrupt kernel image',
  'Could not find kernel image',
  'Kernel panic',
  'No bootable device',
  'Boot failed',
  'FATAL: No bootable device',
  'INACCESSIBLE_BOOT_DEVICE',
];

export class SerialWatch {
  readonly #lines: string[] = [];
  #partial = '';
  #sock: net.Socket | undefined;
  readonly #log: fs.WriteStream;
  readonly #expect: RegExp | undefined;
  readonly #fail: RegExp;
  readonly #waiters = new Set<() => void>();
  matched: string | null = null;
  failed: string | null = null;
  /** When the pattern matched (Date.now()). */
  matchedAt: number | null = null;
  /** Dispatches 'kick' when the pattern matches (probeTcp retries at once). */
  readonly kick = new EventTarget();

  constructor(logFile: string, expect: RegExp | undefined, failPatterns: readonly string[]) {
    this.#log = fs.createWriteStream(logFile);
    this.#log.on('error', () => {});
    this.#expect = expect;
    this.#fail = new RegExp(failPatterns.map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|') || '(?!)');
  }

  async connect(socketPath: string): Promise<void> {
    this.#sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(socketPath);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    this.#sock.on('error', () => {});
    this.#sock.on('data', (d: Buffer) => this.#data(d.toString('latin1')));
  }

  #data(text: string): void {
    this.#log.write(text);
    const parts = (this.#partial + text).split('\n');
    this.#partial = parts.pop() ?? '';
    if (this.#partial.length > 4096) parts.push(this.#partial.slice(0, 4096)), (this.#partial = '');
    for (const raw of parts) this.#line(raw);
    // A prompt without a newline ("boot: ") still counts for the patterns.
    if (this.#partial) this.#check(clean(this.#partial));
    for (const w of this.#waiters) w();
  }

  #line(raw: string): void {
    const line = clean(raw);
    this.#lines.push(line);
    if (this.#lines.length > TAIL_LINES) this.#lines.shift();
    this.#check(line);
  }

  #check(line: string): void {
    // A line first seen unfinished (a prompt) is recorded whole once it ends.
    if (this.matched && line !== this.matched && line.startsWith(this.matched)) this.matched = line;
    if (this.failed && line !== this.failed && line.startsWith(this.failed)) this.failed = line;
    if (this.matched === null && this.#expect?.test(line)) {
      [this.matched, this.matchedAt] = [line, Date.now()];
      this.kick.dispatchEvent(new Event('kick'));
    }
    if (this.failed === null && this.#fail.test(line)) this.failed = line;
  }

  /** The last lines, the unfinished one included. */
  tail(): string[] {
    return this.#partial ? [...this.#lines, clean(this.#partial)] : [...this.#lines];
  }

  /** Resolves when `done()` holds after some output; rejects on abort. */
  async until(done: () => boolean, signal: AbortSignal): Promise<void> {
    while (!done()) {
      signal.throwIfAborted();
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          this.#waiters.delete(wake);
          signal.removeEventListener('abort', wake);
          resolve();
        };
        this.#waiters.add(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
  }

  close(): Promise<void> {
    this.#sock?.destroy();
    return new Promise((r) => this.#log.end(r));
  }
}

// eslint-disable-next-line no-control-regex
const clean = (s: string): string => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '').trimEnd();

export type TcpAttempt = 'answered' | 'closed' | 'silent' | 'refused';

/** One attempt: connect to 127.0.0.1:port, send an HTTP HEAD, wait up to 3 s for a byte. */
export function tcpAttempt(port: number, signal: AbortSignal): Promise<TcpAttempt> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let done = false;
    const timers: NodeJS.Timeout[] = [];
    const end = (r: TcpAttempt): void => {
      if (done) return;
      done = true;
      timers.forEach(clearTimeout);
      signal.removeEventListener('abort', abort);
      s.destroy();
      resolve(r);
    };
    const abort = (): void => end('silent');
    signal.addEventListener('abort', abort, { once: true });
    s.on('error', () => end('refused'));
    s.on('data', () => end('answered'));
    s.on('end', () => end('closed'));
    s.on('close', () => end('closed'));
    s.on('connect', () => {
      s.write('HEAD / HTTP/1.0\r\n\r\n');
      timers.push(setTimeout(() => end('silent'), 3000));
    });
  });
}

/**
 * Tries until the port answers; returns the last outcome when aborted. `kick` (the guest said on
 * its console that it is up) ends a silent attempt at once and retries: an attempt made while the
 * guest's network was still down hangs until its timeout even after the service came up.
 */
export async function probeTcp(port: number, signal: AbortSignal, onAttempt?: (r: TcpAttempt) => void, kick?: EventTarget): Promise<TcpAttempt> {
  let last: TcpAttempt = 'refused';
  while (!signal.aborted) {
    const attempt = new AbortController();
    const onKick = (): void => attempt.abort();
    kick?.addEventListener('kick', onKick);
    const both = AbortSignal.any([signal, attempt.signal]);
    last = await tcpAttempt(port, both);
    kick?.removeEventListener('kick', onKick);
    onAttempt?.(last);
    if (last === 'answered') return last;
    if (!attempt.signal.aborted) await sleep(250, undefined, { signal }).catch(() => undefined);
  }
  return last;
}

/** One guest-ping over the agent socket: true when the agent answered within a few seconds. */
export function pingAgent(socketPath: string, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    let buf = '';
    const end = (ok: boolean): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', abort);
      s.destroy();
      resolve(ok);
    };
    const abort = (): void => end(false);
    const t = setTimeout(() => end(false), 3000);
    signal.addEventListener('abort', abort, { once: true });
    s.on('error', () => end(false));
    s.on('connect', () => s.write(JSON.stringify({ execute: 'guest-ping' }) + '\n'));
    s.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      if (/"return"\s*:/.test(buf)) end(true);
    });
  });
}

export interface ScriptOutcome {
  exitCode: number | null;
  signal: string | null;
  output: string[];
}

/** Runs the probe script (no shell) with the forwarded ports in its environment; killed on abort. */
export function runScript(file: string, env: Record<string, string>, signal: AbortSignal): Promise<ScriptOutcome> {
  return new Promise((resolve) => {
    const child = spawn(file, [], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    const take = (d: Buffer): void => {
      lines.push(...d.toString('utf8').split('\n').filter(Boolean));
      if (lines.length > TAIL_LINES) lines.splice(0, lines.length - TAIL_LINES);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    const abort = (): void => void child.kill('SIGKILL');
    signal.addEventListener('abort', abort, { once: true });
    child.on('error', (err) => {
      lines.push(`cannot run: ${err.message}`);
    });
    child.on('close', (code, sig) => {
      signal.removeEventListener('abort', abort);
      resolve({ exitCode: code, signal: sig, output: lines });
    });
  });
}
