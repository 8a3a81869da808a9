/**
 * The test guest: a Debian kernel, a busybox initramfs and a small ext4 disk (tools/guest/build.sh),
 * booted in QEMU with TCG and its disk on any QEMU drive (an NBD export of rebound, usually).
 *
 * The guest's /init (tools/guest/init.sh) mounts /dev/vda at /mnt, runs the steps of `action`, unmounts
 * and powers off. It reports on the serial console, which this helper captures:
 *   rebound-guest: ...                          progress
 *   REBOUND-LOOP synced=N                       (loop step) loop file N is written and synced
 *   REBOUND-RESULT-BEGIN / KEY=VALUE / REBOUND-RESULT-END   the result
 *   REBOUND-STATUS: ok | fail REASON            the last line before power-off
 * Actions (join steps with '+'): `write:MARKER`, `check`, `loop:COUNT`, `loop:COUNT:WORD` (until the test
 * sends WORD with GuestHandle.send), `fstrim`, `boot`. Every step is bounded by count, never by time.
 * What the guest writes is deterministic (genBlocks), so tests can check it from outside too.
 *
 * startGuest() gives a handle for tests that act while the guest runs (waitFor a line, kill);
 * bootGuest() runs one boot to the end. Every QEMU started here is killed on timeout, on abort,
 * by killAllGuests() and when the test process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from './daemon-process.js';
import { missingPeers } from './peers.js';
import { runOk } from './run.js';

export const GUEST_BUILD = path.join(REPO, 'tools/guest/build.sh');
export const GUEST_DEFAULT_DIR = path.join(REPO, 'test-results/guest');
/** Block size of genBlocks() and of the guest's ext4 filesystem. */
export const GUEST_BLOCK = 4096;
/** Blocks of /rebound/payload.bin (write step) and of each /rebound/loop/NNNNNN.bin (loop step). */
export const PAYLOAD_BLOCKS = 1024;
export const LOOP_FILE_BLOCKS = 64;

export interface GuestImages {
  dir: string;
  kernel: string;
  initrd: string;
  /** The pristine disk image: copy it before use, never boot it directly. */
  disk: string;
  diskBytes: number;
  kernelVersion: string;
  /** Kernel modules the initramfs loads, in order (empty when all are built in). */
  modules: string[];
  /** sha256 of the known files on the disk, by path from the filesystem root ('/data/pattern.bin'). */
  baseFiles: Record<string, string>;
}

/**
 * What the guest build needs on this machine. Like missingPeers(): a missing piece skips with a
 * printed reason on a developer machine and throws under CI.
 */
export function missingGuestPeers(): string[] {
  const missing = missingPeers('qemu-system-x86_64', 'cpio', 'mkfs.ext4', 'busybox');
  const kernels = fs.existsSync('/boot') ? fs.readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')) : [];
  if (!kernels.some((k) => fs.existsSync(`/lib/modules/${k.slice('vmlinuz-'.length)}/modules.dep`))) {
    const what = 'a Debian kernel (linux-image-cloud-amd64)';
    if (process.env.CI) throw new Error(`CI is missing ${what} (tools/setup.sh should install it)`);
    console.warn(`skipping: missing ${what} (run tools/setup.sh)`);
    missing.push('linux-image-cloud-amd64');
  }
  return missing;
}

const builds = new Map<string, Promise<GuestImages>>();

/** Builds the guest once per process (build.sh itself caches across runs and locks against others). */
export function ensureGuest(dir = GUEST_DEFAULT_DIR): Promise<GuestImages> {
  let p = builds.get(dir);
  if (!p) {
    p = buildGuest(dir);
    builds.set(dir, p);
    p.catch(() => builds.delete(dir));
  }
  return p;
}

async function buildGuest(dir: string): Promise<GuestImages> {
  await runOk('bash', [GUEST_BUILD, dir], { timeoutMs: 300_000 });
  const env = readGuestEnv(dir);
  const baseFiles: Record<string, string> = {};
  for (const line of fs.readFileSync(path.join(dir, 'base.sha256'), 'utf8').split('\n')) {
    const m = /^([0-9a-f]{64}) {2}(.+)$/.exec(line);
    if (m) baseFiles['/' + m[2]!] = m[1]!;
  }
  return {
    dir,
    kernel: path.join(dir, 'vmlinuz'),
    initrd: path.join(dir, 'initramfs.cpio.gz'),
    disk: path.join(dir, 'disk.img'),
    diskBytes: Number(env.DISK_BYTES),
    kernelVersion: env.KERNEL ?? '',
    modules: (env.MODULES ?? '').split(' ').filter(Boolean),
    baseFiles,
  };
}

/** The KEY=VALUE facts a guest build wrote to DIR/guest.env. */
export function readGuestEnv(dir: string): Record<string, string> {
  const lines = fs.readFileSync(path.join(dir, 'guest.env'), 'utf8').split('\n').filter((l) => l.includes('='));
  return Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

/** The guest's data generator: `count` 4 KiB blocks, block i = `${tag} ${i as 8 digits}` space-padded + '\n'. */
export function genBlocks(tag: string, count: number): Buffer {
  const out = Buffer.alloc(count * GUEST_BLOCK, 0x20);
  for (let i = 0; i < count; i++) {
    out.write(`${tag} ${String(i).padStart(8, '0')}`, i * GUEST_BLOCK, 'latin1');
    out[(i + 1) * GUEST_BLOCK - 1] = 0x0a;
  }
  return out;
}

/** Content of /rebound/payload.bin after `write:MARKER`. */
export const payloadContent = (marker: string): Buffer => genBlocks(`payload:${marker}`, PAYLOAD_BLOCKS);
/** Content of /rebound/loop/NNNNNN.bin, the loop step's file number `n`. */
export const loopFileContent = (n: number): Buffer => genBlocks(`loop:${n}`, LOOP_FILE_BLOCKS);
/** Path of loop file `n` inside the guest's filesystem. */
export const loopFilePath = (n: number): string => `/rebound/loop/${String(n).padStart(6, '0')}.bin`;

export const sha256 = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex');

/** A marker the guest accepts: [A-Za-z0-9._-], short enough for its 4 KiB block header. */
export function newMarker(prefix = 'm'): string {
  return `${prefix}-${crypto.randomBytes(6).toString('hex')}`;
}

export interface BootOptions {
  /**
   * The disk: an NBD URI (`nbd+unix:///NAME?socket=PATH`, `nbd://HOST:PORT/NAME`) or a local raw file.
   * Becomes `-drive file=...,format=raw,if=virtio`.
   */
  drive: string;
  /** `rebound.action=` steps, e.g. 'write:m1', 'check', 'loop:30+check', 'loop:40:go+check'. Default 'boot'. */
  action?: string;
  /** Kill QEMU after this long (default 120 s) and resolve with timedOut. */
  timeoutMs?: number;
  memoryMiB?: number;
  /** QEMU drive cache mode (default writeback: the guest flushes, and QEMU turns flushes into NBD FLUSH). */
  cache?: 'writeback' | 'writethrough' | 'none' | 'directsync' | 'unsafe';
  /** Pass guest discards (fstrim) through to the drive (default true). */
  discard?: boolean;
  /** More kernel command line words. */
  append?: string;
  /** More QEMU arguments. */
  qemuArgs?: string[];
  /** Called for every console line as it arrives. */
  onLine?: (line: string) => void;
  signal?: AbortSignal;
  guest?: GuestImages;
}

export interface BootResult {
  /** The whole serial console (stdout of QEMU). */
  console: string;
  /** QEMU's own stderr (e.g. "could not connect to NBD server"). */
  qemuStderr: string;
  exitCode: number | null;
  exitSignal: NodeJS.Signals | null;
  timedOut: boolean;
  aborted: boolean;
  /** 'ok' when the guest finished its steps and unmounted cleanly; 'none' when it never said. */
  status: 'ok' | 'fail' | 'none';
  failure?: string;
  /** The text between REBOUND-RESULT-BEGIN and REBOUND-RESULT-END. */
  result?: string;
  /** `result` as KEY=VALUE; a key that repeats (two check steps) keeps its last value. */
  fields: Record<string, string>;
  /** Console lines that tell of disk or filesystem trouble (I/O errors, EXT4-fs errors, ...). */
  ioErrors: string[];
  /** Highest N of "REBOUND-LOOP synced=N", or -1. */
  loopSynced: number;
  /** Wall-clock ms from QEMU start to the guest's first /init line (kernel boot), or -1. */
  bootMs: number;
  /** Guest uptime (ms) when /init started, or -1. */
  initUptimeMs: number;
  /** Wall-clock ms from QEMU start to QEMU exit. */
  totalMs: number;
}

export interface GuestHandle {
  child: ChildProcess;
  /** The console so far. */
  console(): string;
  /** Resolves with the first console line matching `re` (rejects if the guest ends first or on timeout). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Types a line on the guest's serial console (a `loop:COUNT:WORD` step waits for WORD). */
  send(line: string): void;
  /** Kills QEMU at once (a crash of the VM, as far as the disk is concerned). */
  kill(): void;
  done: Promise<BootResult>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Kills every QEMU this process started and that still runs (for afterAll / finally). */
export function killAllGuests(): void {
  for (const c of live) c.kill('SIGKILL');
}

const IO_ERROR = /I\/O error|EXT4-fs (error|warning)|Buffer I\/O|blk_update_request|critical medium error|Remounting filesystem read-only|JBD2: .*error|Aborting journal/i;

export function qemuDriveValue(drive: string): string {
  // QEMU's option parser splits on ','; a literal comma is ',,'.
  return drive.replaceAll(',', ',,');
}

export async function startGuest(opts: BootOptions): Promise<GuestHandle> {
  const guest = opts.guest ?? (await ensureGuest());
  const action = opts.action ?? 'boot';
  if (!/^[A-Za-z0-9._:+-]+$/.test(action)) throw new TypeError(`bad guest action '${action}'`);
  const cache = opts.cache ?? 'writeback';
  const drive = [`file=${qemuDriveValue(opts.drive)}`, 'format=raw', 'if=virtio', `cache=${cache}`];
  if (opts.discard ?? true) drive.push('discard=unmap');
  // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can fail and panic
  // ("IO-APIC + timer doesn't work!"), as seen at load 25; virtual machines skip it (as libguestfs does).
  const append = ['console=ttyS0', 'panic=-1', 'quiet', 'mitigations=off', 'no_timer_check', `rebound.action=${action}`];
  if (opts.append) append.push(opts.append);
  const args = [
    '-accel', 'tcg',
    '-m', String(opts.memoryMiB ?? 256),
    '-nodefaults', '-no-user-config',
    '-display', 'none',
    '-serial', 'stdio',
    '-no-reboot',
    '-kernel', guest.kernel,
    '-initrd', guest.initrd,
    '-append', append.join(' '),
    '-drive', drive.join(','),
    ...(opts.qemuArgs ?? []),
  ];
  const started = Date.now();
  // stdin is the serial console's input (send()).
  const child = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin!.on('error', () => undefined); // QEMU gone: nothing to type into
  live.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', killAllGuests);
  }

  let out = '';
  let err = '';
  let partial = '';
  let bootMs = -1;
  let timedOut = false;
  let aborted = false;
  const waiters = new Set<{ re: RegExp; resolve: (l: string) => void; reject: (e: Error) => void }>();
  const onLine = (line: string): void => {
    if (bootMs < 0 && line.startsWith('rebound-guest: init started')) bootMs = Date.now() - started;
    opts.onLine?.(line);
    for (const w of waiters) {
      if (w.re.test(line)) {
        waiters.delete(w);
        w.resolve(line);
      }
    }
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    const lines = (partial + d).split('\n');
    partial = lines.pop()!;
    for (const l of lines) onLine(l.replace(/\r$/, ''));
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));

  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, opts.timeoutMs ?? 120_000);
  const onAbort = (): void => {
    aborted = true;
    child.kill('SIGKILL');
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();

  const done = new Promise<BootResult>((resolve) => {
    const finish = (code: number | null, sig: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      live.delete(child);
      if (partial) onLine(partial.replace(/\r$/, ''));
      for (const w of waiters) w.reject(new Error(`guest ended before a line matched ${w.re}`));
      waiters.clear();
      resolve(parseConsole(out, err, { code, sig, timedOut, aborted, bootMs, totalMs: Date.now() - started }));
    };
    child.on('close', finish);
    child.on('error', (e) => {
      err += `\nspawn failed: ${e.message}`;
      finish(null, null);
    });
  });

  return {
    child,
    console: () => out,
    send: (line) => void child.stdin!.write(`${line}\n`),
    kill: () => child.kill('SIGKILL'),
    done,
    waitFor: (re, timeoutMs = 120_000) =>
      new Promise<string>((resolve, reject) => {
        const hit = out.split('\n').find((l) => re.test(l.replace(/\r$/, '')));
        if (hit !== undefined) return resolve(hit.replace(/\r$/, ''));
        if (child.exitCode !== null || child.signalCode !== null) return reject(new Error(`guest has ended; no line matched ${re}`));
        const w = {
          re,
          resolve: (l: string) => {
            clearTimeout(t);
            resolve(l);
          },
          reject: (e: Error) => {
            clearTimeout(t);
            reject(e);
          },
        };
        const t = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`no console line matched ${re} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(w);
      }),
  };
}

/** Boots the guest once, to power-off (or timeout), and returns what it said. */
export async function bootGuest(opts: BootOptions): Promise<BootResult> {
  return (await startGuest(opts)).done;
}

function parseConsole(
  out: string,
  err: string,
  x: { code: number | null; sig: NodeJS.Signals | null; timedOut: boolean; aborted: boolean; bootMs: number; totalMs: number },
): BootResult {
  const text = out.replaceAll('\r', '');
  const lines = text.split('\n');
  const begin = lines.indexOf('REBOUND-RESULT-BEGIN');
  const end = lines.indexOf('REBOUND-RESULT-END', begin + 1);
  const resultLines = begin >= 0 && end > begin ? lines.slice(begin + 1, end) : undefined;
  const fields: Record<string, string> = {};
  for (const l of resultLines ?? []) {
    const i = l.indexOf('=');
    if (i > 0) fields[l.slice(0, i)] = l.slice(i + 1);
  }
  const statusLine = lines.find((l) => l.startsWith('REBOUND-STATUS: '));
  const statusText = statusLine?.slice('REBOUND-STATUS: '.length);
  let loopSynced = -1;
  for (const m of text.matchAll(/^REBOUND-LOOP synced=(\d+)$/gm)) loopSynced = Math.max(loopSynced, Number(m[1]));
  const up = /^rebound-guest: init started at ([\d.]+)s uptime/m.exec(text);
  return {
    console: out,
    qemuStderr: err,
    exitCode: x.code,
    exitSignal: x.sig,
    timedOut: x.timedOut,
    aborted: x.aborted,
    status: statusText === 'ok' ? 'ok' : statusText?.startsWith('fail') ? 'fail' : 'none',
    failure: statusText?.startsWith('fail') ? statusText.slice(4).trim() : undefined,
    result: resultLines?.join('\n'),
    fields,
    ioErrors: lines.filter((l) => IO_ERROR.test(l)),
    loopSynced,
    bootMs: x.bootMs,
    initUptimeMs: up ? Math.round(Number(up[1]) * 1000) : -1,
    totalMs: x.totalMs,
  };
}

/** One line for test logs: "boot 6.1 s (guest 4.3 s), total 12.0 s, status ok". */
export function describeBoot(r: BootResult): string {
  const s = (ms: number): string => (ms < 0 ? '?' : `${(ms / 1000).toFixed(1)} s`);
  return `kernel to /init ${s(r.bootMs)} (guest uptime ${s(r.initUptimeMs)}), total ${s(r.totalMs)}, status ${r.status}${r.failure ? ` (${r.failure})` : ''}`;
}

/** A failure message with the evidence: the console tail and QEMU's stderr. */
export function explainBoot(r: BootResult): string {
  const tail = r.console.replaceAll('\r', '').split('\n').slice(-40).join('\n');
  return `guest boot: ${describeBoot(r)}, exit ${r.exitCode ?? r.exitSignal}${r.timedOut ? ', TIMED OUT' : ''}\n--- console (tail) ---\n${tail}\n--- qemu stderr ---\n${r.qemuStderr}`;
}

/** Reads a file out of an ext4 image with debugfs (no mount needed). */
export async function debugfsCat(image: string, file: string): Promise<Buffer> {
  const out = path.join(path.dirname(image), `.debugfs-${crypto.randomBytes(4).toString('hex')}`);
  try {
    const r = await runOk('debugfs', ['-R', `dump ${file} ${out}`, image]);
    if (!fs.existsSync(out)) throw new Error(`debugfs could not dump ${file}: ${r.stderr}`);
    return fs.readFileSync(out);
  } finally {
    fs.rmSync(out, { force: true });
  }
}
