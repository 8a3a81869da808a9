/**
 * The daemon's configuration: one schema with defaults, units and docs (`rebound serve --help`
 * and `rebound config` are generated from it). Sources, later ones winning: defaults,
 * `<data>/config.json`, environment (REBOUND_DATA), command-line flags. Validated once at start-up.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ReboundError } from '../errors.js';
import { parseTcpAddress } from '../util/address.js';
import type { LogLevel } from '../util/log.js';
import { parseExportSpec, type ExportSpec } from './export-spec.js';

export interface DaemonConfig {
  /** Directory that holds all state. Default ./rebound-data (or $REBOUND_DATA). */
  dataDir: string;
  /** NBD TCP listen addresses (HOST:PORT). Default 127.0.0.1:10809. */
  nbd: string[];
  /** NBD Unix socket paths. Default none. */
  nbdSocket: string[];
  /** HTTP API listen address (HOST:PORT), or 'off'. Default 127.0.0.1:10810. */
  http: string;
  /** Exports given as NAME=SOURCE[,OPTION...]. */
  exports: string[];
  /** Create and export demo images (a raw disk image and a memory scratch disk). */
  demo: boolean;
  /** Publish every restore point as a read-only export VM@POINT/DISK (and VM@latest/DISK). Default true. */
  exportPoints: boolean;
  /** Directory where the FUSE file tree (restore points, partitions, sessions) is mounted, or 'off'. Default off. */
  fuse: string;
  /** IOPS limit for all recovery-session exports together (0: none). Unit: operations/s. Default 0. */
  qosIops: number;
  /** Bandwidth limit for all recovery-session exports together (0: none). Unit: bytes/s. Default 0. */
  qosBandwidth: number;
  /** The sessions report flags sessions older than this. Unit: hours. Default 168 (a week). */
  sessionWarnAgeHours: number;
  /** The sessions report flags sessions whose overlays hold more than this. Unit: bytes. Default 50 GiB. */
  sessionWarnSize: number;
  /** NFSv3 datastore listen addresses (HOST:PORT; MOUNT and NFS share the port). Default none (off). */
  nfs: string[];
  /** Portmapper listen address for the NFS datastore: PORT (on the first NFS host), HOST:PORT, or 'off'. Default 111. */
  portmap: string;
  /** Client addresses or subnets (ADDR/BITS) allowed to mount the NFS datastore; empty = all. Default all. */
  nfsClients: string[];
  /** Export the NFS datastore read-only. Default false. */
  nfsReadOnly: boolean;
  /** Size of the shared cache of uncompressed chunks. Unit: bytes. Default 256 MiB. */
  cacheSize: number;
  /** Chunk size of a new repository (fixed once created). Unit: bytes. Default 1 MiB. */
  chunkSize: number;
  /** Requests processed concurrently per NBD connection. Unit: requests. Default 256. */
  nbdMaxInflight: number;
  /** How long a graceful shutdown waits for in-flight I/O. Unit: ms. Default 10000. */
  shutdownTimeoutMs: number;
  logLevel: LogLevel;
  logFormat: 'text' | 'json';
}

export interface FieldDoc {
  key: keyof DaemonConfig;
  unit?: string;
  default: unknown;
  doc: string;
}

export const DEFAULT_NBD_PORT = 10809;
export const DEFAULT_HTTP_PORT = 10810;

export function defaultConfig(env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  return {
    dataDir: env.REBOUND_DATA || './rebound-data',
    nbd: [`127.0.0.1:${DEFAULT_NBD_PORT}`],
    nbdSocket: [],
    http: `127.0.0.1:${DEFAULT_HTTP_PORT}`,
    exports: [],
    demo: false,
    exportPoints: true,
    fuse: 'off',
    qosIops: 0,
    qosBandwidth: 0,
    sessionWarnAgeHours: 168,
    sessionWarnSize: 50 * 1024 ** 3,
    nfs: [],
    portmap: '111',
    nfsClients: [],
    nfsReadOnly: false,
    cacheSize: 256 * 1024 * 1024,
    chunkSize: 1024 * 1024,
    nbdMaxInflight: 256,
    shutdownTimeoutMs: 10_000,
    logLevel: 'info',
    logFormat: 'text',
  };
}

export const CONFIG_FIELDS: FieldDoc[] = [
  { key: 'dataDir', default: './rebound-data', doc: 'data directory (all state lives here); env REBOUND_DATA' },
  { key: 'nbd', default: [`127.0.0.1:${DEFAULT_NBD_PORT}`], doc: 'NBD TCP listen addresses, HOST:PORT (port 0 = any free port)' },
  { key: 'nbdSocket', default: [], doc: 'NBD Unix socket paths' },
  { key: 'http', default: `127.0.0.1:${DEFAULT_HTTP_PORT}`, doc: "HTTP API listen address, HOST:PORT, or 'off'" },
  { key: 'exports', default: [], doc: 'exports, NAME=SOURCE[,OPTION...]' },
  { key: 'demo', default: false, doc: 'create and export demo images' },
  { key: 'exportPoints', default: true, doc: 'publish every restore point as a read-only export VM@POINT/DISK and VM@latest/DISK' },
  { key: 'fuse', default: 'off', doc: "mount the read-only file tree (restore points, partitions, sessions) at this directory, or 'off'" },
  { key: 'qosIops', unit: 'operations/s', default: 0, doc: 'IOPS limit for all recovery-session exports together (0: none)' },
  { key: 'qosBandwidth', unit: 'bytes/s', default: 0, doc: 'bandwidth limit for all recovery-session exports together (0: none)' },
  { key: 'sessionWarnAgeHours', unit: 'hours', default: 168, doc: 'the sessions report flags sessions older than this' },
  { key: 'sessionWarnSize', unit: 'bytes', default: 50 * 1024 ** 3, doc: 'the sessions report flags sessions whose overlays hold more than this' },
  { key: 'nfs', default: [], doc: 'NFSv3 datastore listen addresses, HOST:PORT (usually 0.0.0.0:2049); none = no NFS' },
  { key: 'portmap', default: '111', doc: "portmapper for the NFS datastore: PORT (on the first NFS host), HOST:PORT, or 'off' (ESXi, QEMU and libnfs ask port 111)" },
  { key: 'nfsClients', default: [], doc: 'client addresses or subnets (ADDR/BITS) allowed to mount the NFS datastore; empty = all' },
  { key: 'nfsReadOnly', default: false, doc: 'export the NFS datastore read-only' },
  { key: 'cacheSize', unit: 'bytes', default: 256 * 1024 * 1024, doc: 'shared cache of uncompressed chunks (restore point reads)' },
  { key: 'chunkSize', unit: 'bytes', default: 1024 * 1024, doc: 'chunk size of a new repository (fixed once created)' },
  { key: 'nbdMaxInflight', unit: 'requests', default: 256, doc: 'requests processed concurrently per NBD connection' },
  { key: 'shutdownTimeoutMs', unit: 'ms', default: 10_000, doc: 'how long a graceful shutdown waits for in-flight I/O' },
  { key: 'logLevel', default: 'info', doc: 'debug | info | warn | error' },
  { key: 'logFormat', default: 'text', doc: 'text | json' },
];

const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'];

/** Reads `<dataDir>/config.json` if present (only keys of the schema are allowed). */
export function readConfigFile(dataDir: string): Partial<DaemonConfig> {
  const file = path.join(dataDir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return {};
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `${file}: not valid JSON: ${(err as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `${file}: expected a JSON object`);
  }
  const known = new Set(CONFIG_FIELDS.map((f) => f.key as string));
  for (const key of Object.keys(obj)) {
    if (!known.has(key)) throw new ReboundError('ERR_INVALID_ARGUMENT', `${file}: unknown setting '${key}'`);
  }
  return obj as Partial<DaemonConfig>;
}

export interface ValidatedConfig extends DaemonConfig {
  exportSpecs: ExportSpec[];
}

/** Checks every field; throws ERR_INVALID_* naming the field. */
export function validateConfig(c: DaemonConfig, cwd = process.cwd()): ValidatedConfig {
  const fail = (key: string, why: string): never => {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `invalid setting ${key}: ${why}`);
  };
  if (typeof c.dataDir !== 'string' || !c.dataDir) fail('dataDir', 'expected a directory path');
  for (const key of ['nbd', 'nbdSocket', 'exports'] as const) {
    if (!Array.isArray(c[key]) || c[key].some((v) => typeof v !== 'string')) fail(key, 'expected a list of strings');
  }
  c.nbd.forEach((a) => parseTcpAddress(a));
  if (c.http !== 'off') parseTcpAddress(c.http);
  if (!Array.isArray(c.nfs) || c.nfs.some((v) => typeof v !== 'string')) fail('nfs', 'expected a list of HOST:PORT');
  c.nfs.forEach((a) => parseTcpAddress(a));
  if (typeof c.portmap !== 'string' && typeof c.portmap !== 'number') fail('portmap', "expected PORT, HOST:PORT or 'off'");
  if (String(c.portmap) !== 'off') parseTcpAddress(String(c.portmap));
  if (!Array.isArray(c.nfsClients) || c.nfsClients.some((v) => typeof v !== 'string' || !(v === '*' || net.isIP(v.split('/')[0]!)))) {
    fail('nfsClients', "expected a list of IP addresses, subnets ADDR/BITS or '*'");
  }
  if (typeof c.nfsReadOnly !== 'boolean') fail('nfsReadOnly', 'expected true or false');
  if (typeof c.fuse !== 'string' || !c.fuse) fail('fuse', "expected a directory path or 'off'");
  for (const key of ['nbdMaxInflight', 'shutdownTimeoutMs', 'cacheSize', 'chunkSize'] as const) {
    if (!Number.isSafeInteger(c[key]) || c[key] < 1) fail(key, 'expected a positive integer');
  }
  for (const key of ['qosIops', 'qosBandwidth', 'sessionWarnAgeHours', 'sessionWarnSize'] as const) {
    if (!Number.isSafeInteger(c[key]) || c[key] < 0) fail(key, 'expected a non-negative integer');
  }
  if (!LOG_LEVELS.includes(c.logLevel)) fail('logLevel', `expected one of ${LOG_LEVELS.join(', ')}`);
  if (c.logFormat !== 'text' && c.logFormat !== 'json') fail('logFormat', 'expected text or json');
  const exportSpecs = c.exports.map((e) => parseExportSpec(e, cwd));
  const names = new Set<string>();
  for (const s of exportSpecs) {
    if (names.has(s.name)) fail('exports', `export name '${s.name}' is given twice`);
    names.add(s.name);
  }
  return { ...c, dataDir: path.resolve(cwd, c.dataDir), fuse: c.fuse === 'off' ? 'off' : path.resolve(cwd, c.fuse), exportSpecs };
}
