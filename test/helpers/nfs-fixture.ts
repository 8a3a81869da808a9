/**
 * NFS datastore fixtures: start the server of test/helpers/nfs-child.mjs as a process (inside a
 * network namespace when clients need the portmapper on 111), or in-process (startInProcess), and
 * build nfs:// URLs.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { assertBuilt, REPO } from './daemon-process.js';
import type { NetNs } from './netns.js';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { FaultLayer } from '../../src/blockdev/layers/fault.js';
import type { SessionInfo } from '../../src/exports/catalog.js';
import { NfsServer, type NfsServerOptions } from '../../src/nfs/server.js';
import { silentLogger, createLogger } from '../../src/util/log.js';
import { patternBuffer } from './images.js';
import { MemoryCatalog } from './memory-catalog.js';

export const NFS_CHILD = path.join(REPO, 'test/helpers/nfs-child.mjs');

export interface ChildSession {
  name: string;
  vm: string;
  pointId: string;
  createdAt: string;
  /** The session's files directory (NFS keeps the session folder's files in DIR/nfs/). */
  dir: string;
  /** Publish the session on NFS (default true); else on NBD only. */
  publishNfs?: boolean;
  disks: Array<{ name: string; base: string; overlay: string }>;
}

export interface ChildPoint {
  vm: string;
  id: string;
  createdAt: string;
  disks: Array<{ name: string; file: string }>;
  configs?: Record<string, string>;
}

export interface ChildConfig {
  stateDir: string;
  /** HOST:PORT (port 0: any). */
  nfs: string;
  /** HOST:PORT of the portmapper, or undefined for none. */
  portmap?: string;
  readOnly?: boolean;
  clients?: string[];
  /** The /xen rendering (default raw). */
  xenFormat?: 'raw' | 'vhd' | 'off';
  sessions?: ChildSession[];
  points?: ChildPoint[];
  logLevel?: string;
}

export interface NfsChild {
  child: ChildProcess;
  port: number;
  stderr(): string;
  /** SIGTERM (graceful) or SIGKILL (crash); resolves when it has exited. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts the server process, in `netns` when given. */
export async function startNfsChild(cfg: ChildConfig, file: string, netns?: NetNs): Promise<NfsChild> {
  assertBuilt();
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2));
  const args = [NFS_CHILD, file];
  const child = netns ? netns.spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const deadline = Date.now() + 15_000;
  while (!/READY (\d+)/.test(out)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`NFS server did not start (exit ${child.exitCode}):\n${out}\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    child,
    port: Number(/READY (\d+)/.exec(out)![1]),
    stderr: () => err,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** nfs:// URL of a datastore path; libnfs tools accept ?nfsport=&mountport= to skip the portmapper. */
export function nfsUrl(p: string, port?: number): string {
  const q = port ? `?nfsport=${port}&mountport=${port}` : '';
  return `nfs://127.0.0.1${p.startsWith('/') ? p : '/' + p}${q}`;
}

// ---- in-process server (unit and conformance tests) -----------------------------------------

/** A restore point for startInProcess: VM@ID with one disk, disk0. */
export interface MemoryPointSpec {
  vm: string;
  id: string;
  content: Buffer;
  configs: Record<string, string>;
}

export interface InProcess {
  server: NfsServer;
  port: number;
  /** What the server publishes (its own catalog): add or remove points and sessions here. */
  catalog: MemoryCatalog;
  /** The session's disk (a FaultLayer over memory: set `.rules` to delay or fail). */
  disk: FaultLayer;
  diskContent: Buffer;
  /** Session `s1` (published on NFS unless `withSession: false`). */
  session: SessionInfo;
  close(): Promise<void>;
}

export const SESSION_DISK_BYTES = 4 * 1024 * 1024 + 4096 + 123;
const POINT_TIME = new Date('2026-11-22T03:40:00Z');

export function memoryPoint(vm: string, id: string, content: Buffer, configs: Record<string, string> = {}): MemoryPointSpec {
  return { vm, id, content, configs };
}

/**
 * An NfsServer on 127.0.0.1:0 over its own catalog: session `s1` (disk0: a patterned memory disk,
 * the session's files under `sessionDir`) and the given points, all published on NFS.
 */
export async function startInProcess(
  stateDir: string,
  sessionDir: string,
  opts: Partial<Omit<NfsServerOptions, 'catalog'>> & { points?: MemoryPointSpec[]; disk?: FaultLayer; diskContent?: Buffer; createdAt?: Date; withSession?: boolean } = {},
): Promise<InProcess> {
  const { points = [], disk: givenDisk, diskContent: givenContent, createdAt, withSession = true, ...serverOpts } = opts;
  let disk = givenDisk;
  let diskContent = givenContent;
  if (!disk) {
    diskContent = patternBuffer(0, SESSION_DISK_BYTES);
    const mem = new MemoryDevice(SESSION_DISK_BYTES);
    await mem.write(diskContent, 0);
    disk = new FaultLayer(mem);
  }
  fs.mkdirSync(sessionDir, { recursive: true });
  const session: SessionInfo = { name: 's1', vm: 'vm1', pointId: '20261122T034000Z', createdAt: createdAt ?? new Date('2026-11-22T05:00:00Z'), filesDir: sessionDir };
  const catalog = new MemoryCatalog();
  for (const p of points) catalog.addPoint(p.vm, p.id, { disk0: p.content }, { configs: p.configs, createdAt: POINT_TIME, publish: ['nfs'] });
  if (withSession) catalog.addSession(session, { disk0: disk }, { publish: ['nfs'] });
  const server = new NfsServer({
    stateDir,
    log: process.env.REBOUND_TEST_LOG ? createLogger({ level: 'debug' }) : silentLogger,
    ...serverOpts,
    catalog: catalog.view('nfs'),
  });
  const { port } = await server.listen('127.0.0.1', 0);
  return {
    server,
    port,
    catalog,
    disk,
    diskContent: diskContent ?? Buffer.alloc(0),
    session,
    close: async () => {
      await server.close(2000);
      await catalog.close(); // the session's disk stays open: the test may start another server over it
    },
  };
}

/** `rebound serve ARGS` inside a network namespace; resolves once its banner is out. */
export async function startDaemonInNetns(ns: NetNs, args: string[], timeoutMs = 20_000): Promise<NfsChild & { http: string; stdout(): string }> {
  assertBuilt();
  const child = ns.spawn(process.execPath, [path.join(REPO, 'dist/cli/main.js'), 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const deadline = Date.now() + timeoutMs;
  while (!out.includes('Press Ctrl-C')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`daemon did not start (exit ${child.exitCode}):\n${out}\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    child,
    port: Number(/NFS: datastore at [^ ]*:(\d+)/.exec(out)?.[1]),
    http: /HTTP API: http:\/\/([^/\s]+)\//.exec(out)?.[1] ?? '',
    stdout: () => out,
    stderr: () => err,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
