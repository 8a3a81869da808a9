/**
 * The one schema of the daemon's configuration: every setting with its kind of value (which knows
 * the unit and parses every source), its default and its documentation. The `DaemonConfig` type,
 * `defaultConfig()`, validation, the `rebound serve` flags and docs/config.md are all derived from
 * this table; nothing else lists the settings.
 *
 * Names: the config.json key is the field's key; the flag is `--` plus the key in kebab-case
 * unless `flag` says otherwise (kept for the flags users already type: --data, --export,
 * --max-inflight); the environment variable is REBOUND_ plus the flag in upper snake case
 * (REBOUND_DATA, REBOUND_CACHE_SIZE). Lists have no environment variable: they are repeatable
 * flags and JSON arrays.
 */
import type { LogLevel } from '../util/log.js';
import { accessRuleType } from '../tls/access.js';
import { TLS_MODES } from '../tls/nbd-tls.js';
import { EXPORT_OPTIONS } from './export-spec.js';
import { validateWebhookUrl } from '../alerts/webhooks.js';
import { XEN_FORMATS } from '../nfs/xen-names.js';
import { checkCron, checkPort, checkRegex } from '../verify/checks.js';
import {
  addressType,
  booleanType,
  choiceType,
  integerType,
  listType,
  nfsClientType,
  pathType,
  sizeType,
  textType,
  type FieldType,
} from './field-types.js';

export interface ConfigField<T> {
  type: FieldType<T>;
  default: T;
  /** What the setting does, for `--help` and docs/config.md. */
  doc: string;
  /** The `rebound serve` flag without `--`, when it is not the key in kebab-case. */
  flag?: string;
  /** Lists only: a later source (config.json, then flags) adds to the list instead of replacing it. */
  accumulate?: boolean;
  /** false: config.json cannot set it (the data directory, where config.json lives). */
  inConfigFile?: false;
}

/** T comes from the kind alone, so a default of the wrong type does not widen it. */
const field = <T>(f: Omit<ConfigField<T>, 'default'> & { default: NoInfer<T> }): ConfigField<T> => f;

export const DEFAULT_NBD_PORT = 10809;
export const DEFAULT_HTTP_PORT = 10810;
const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent'];
const MiB = 1024 ** 2;

export const CONFIG_SCHEMA = {
  dataDir: field({
    type: pathType('DIR'),
    default: './rebound-data',
    flag: 'data',
    inConfigFile: false,
    doc:
      'Directory that holds all state: repository, catalog, sessions, overlays, config.json. One daemon per directory. ' +
      'config.json lives in it, so a dataDir key inside config.json is ignored.',
  }),
  nbd: field({
    type: listType(addressType(), { none: true }),
    default: [`127.0.0.1:${DEFAULT_NBD_PORT}`],
    doc: 'NBD TCP listen addresses (port 0: any free port).',
  }),
  nbdSocket: field({
    type: listType(textType('PATH', 'a Unix socket path')),
    default: [],
    doc: 'NBD listeners on Unix sockets.',
  }),
  http: field({
    type: addressType({ off: true }),
    default: `127.0.0.1:${DEFAULT_HTTP_PORT}`,
    doc: "HTTP API listen address (what the CLI client commands and the dashboard talk to), or 'off'.",
  }),
  httpHostNames: field({
    type: listType(textType('NAME', 'a host name or address')),
    default: [],
    flag: 'http-host-name',
    doc: "More names the HTTP API answers to: a DNS name or address by which operators reach it (port mapping, NAT, a load balancer). Loopback names, the listen address and, on a wildcard listener, this machine's name and addresses are always accepted; any other Host is refused (DNS rebinding).",
  }),
  httpTls: field({
    type: booleanType,
    default: false,
    doc:
      "Serve the HTTP API over HTTPS only, with tlsCertDir's server-cert.pem and server-key.pem (the certificate directory of NBD TLS). " +
      'Clients trust its CA: rebound --ca-cert DIR/ca-cert.pem (or REBOUND_CA_CERT), curl --cacert.',
  }),
  exports: field({
    type: listType(textType('SPEC', 'NAME=SOURCE[,OPTION...]')),
    default: [],
    flag: 'export',
    accumulate: true,
    doc:
      'Exports to publish, each NAME=SOURCE[,OPTION...]. SOURCE is a raw image file or block device (served read-only), ' +
      'repo:VM[@POINT]/DISK (a disk of a restore point) or memory:SIZE (volatile, writable). OPTIONS: ' +
      Object.values(EXPORT_OPTIONS).join('; ') +
      '.',
  }),
  demo: field({
    type: booleanType,
    default: false,
    doc:
      'Back up a demo disk into the repository (VM demo) and publish it: demo@latest/disk0 (read-only), ' +
      'recovered (writable, copy-on-write) and a scratch disk.',
  }),
  exportPoints: field({
    type: booleanType,
    default: true,
    doc: 'Publish every restore point as a read-only export VM@POINT/DISK (and VM@latest/DISK).',
  }),
  fuse: field({
    type: pathType('DIR', { off: true }),
    default: 'off',
    doc:
      'Mount the read-only file tree at this directory: DIR/vms/VM/POINT/DISK.raw, DISK.parts/N (partitions), config/, ' +
      "DIR/sessions/NAME/DISK.raw; loop-mount a partition to copy files out. 'off': no mount.",
  }),
  sourceDirs: field({
    type: listType(pathType('DIR')),
    default: [],
    flag: 'source-dir',
    doc:
      'Directories the HTTP API may back up files from: disk sources and VM config files must be at or below one (after resolving ' +
      'symlinks; `..` is refused). A block device is allowed only when listed exactly (an entry under /dev is a device, not a ' +
      'directory). NBD URIs are not paths and are always allowed. None given: the API backs up no files (docs/security.md).',
  }),
  targetDirs: field({
    type: listType(pathType('DIR')),
    default: [],
    flag: 'target-dir',
    doc:
      'Directories restores and migrations through the HTTP API may write files into: the target must be at or below one (after ' +
      'resolving symlinks; a missing file through its deepest existing directory). Block devices only when listed exactly, as for ' +
      'sourceDirs. NBD URIs are always allowed. None given: the API writes no files (docs/security.md).',
  }),
  qosIops: field({
    type: integerType('operations/s'),
    default: 0,
    doc: 'IOPS limit for all recovery-session exports together; 0: no limit.',
  }),
  qosBandwidth: field({
    type: sizeType('bytes/s'),
    default: 0,
    doc: 'Bandwidth limit for all recovery-session exports together; 0: no limit.',
  }),
  sessionWarnAgeHours: field({
    type: integerType('hours', { placeholder: 'HOURS' }),
    default: 168,
    doc: 'The sessions report flags sessions older than this (168: a week).',
  }),
  sessionWarnSize: field({
    type: sizeType('bytes'),
    default: 50 * 1024 * MiB,
    doc: 'The sessions report flags sessions whose overlays hold more than this.',
  }),
  alertWebhooks: field({
    type: listType(textType('URL', 'an http:// or https:// URL', validateWebhookUrl)),
    default: [],
    flag: 'alert-webhook',
    doc: 'Alerts are POSTed as JSON to these URLs (docs/alerts.md): sessions older or bigger than sessionWarnAgeHours/sessionWarnSize, a quota above 90 %, a paused or stalled migration, a verify that found bad chunks, a failed backup or restore, the repository\'s disk nearly full. Retried with backoff; one message when a condition starts, one when it clears.',
  }),
  alertDiskFreePercent: field({
    type: integerType('percent', { placeholder: 'PERCENT' }),
    default: 10,
    doc: "Alert when the repository's file system has less than this share free (0: never).",
  }),
  alertMigrationStallMinutes: field({
    type: integerType('minutes', { placeholder: 'MINUTES' }),
    default: 15,
    doc: 'Alert when a migration copying data has made no progress for this long (0: never).',
  }),
  alertCheckSeconds: field({
    type: integerType('seconds', { min: 1, placeholder: 'SECONDS' }),
    default: 30,
    doc: 'How often the alert conditions are evaluated.',
  }),
  verifyConcurrency: field({
    type: integerType('boots', { min: 1, placeholder: 'N' }),
    default: 2,
    doc: 'Verification boots (rebound verify --boot, docs/verification.md) running at once; more wait their turn.',
  }),
  verifyAccel: field({
    type: choiceType('ACCEL', ['auto', 'kvm', 'tcg'] as const),
    default: 'auto',
    doc: "How verification boots run the guest: kvm (hardware virtualization), tcg (QEMU's emulation: slow, works everywhere) or auto (kvm when /dev/kvm can be opened, else tcg). Set tcg where /dev/kvm exists but does not work (some nested setups).",
  }),
  verifyAfterBackup: field({
    type: booleanType,
    default: false,
    doc: 'Verify each new restore point (a backup or a session commit) by booting it, with the verify* defaults below.',
  }),
  verifySchedule: field({
    type: textType('CRON', "a cron expression (minute hour day-of-month month day-of-week, e.g. '0 3 * * *'), or 'off'", checkCron),
    default: 'off',
    doc: "When to verify the newest restore point of every VM by booting it (server's local time).",
  }),
  verifyTimeoutSeconds: field({
    type: integerType('seconds', { min: 1, placeholder: 'SECONDS' }),
    default: 600,
    doc: 'How long a verification boot may take before it fails, unless the request says otherwise.',
  }),
  verifyExpectSerial: field({
    type: textType('REGEX', "a regular expression, or 'off'", checkRegex),
    default: 'off',
    doc: 'For scheduled and after-backup verifications: a pattern the serial console must show.',
  }),
  verifyTcpPorts: field({
    type: listType(textType('PORT', 'a TCP port 1-65535', checkPort)),
    default: [],
    flag: 'verify-tcp-port',
    doc: 'For scheduled and after-backup verifications: guest TCP ports that must answer.',
  }),
  verifyScriptDirs: field({
    type: listType(pathType('DIR')),
    default: [],
    flag: 'verify-script-dir',
    doc: 'Directories probe scripts (rebound verify --script) may be run from; admins only. Empty: no scripts.',
  }),
  verifyIops: field({
    type: integerType('operations/s', { placeholder: 'IOPS' }),
    default: 0,
    doc: 'I/O operations per second of each verification boot\'s disks (besides the global qosIops/qosBandwidth they share with sessions); 0: no own limit.',
  }),
  verifyBandwidth: field({
    type: sizeType('bytes/s'),
    default: 0,
    doc: 'Bandwidth of each verification boot\'s disks; 0: no own limit.',
  }),
  nfs: field({
    type: listType(addressType(), { none: true }),
    default: [],
    doc:
      'NFSv3 datastore listen addresses (MOUNT and NFS v3 share the port; usually 0.0.0.0:2049): /sessions/NAME/ and ' +
      '/backups/VM/POINT/ for ESXi and any NFS client. None: no NFS.',
  }),
  portmap: field({
    type: addressType({ off: true, placeholder: 'PORT' }),
    default: '111',
    doc: "Portmapper for the NFS datastore: PORT (on the first NFS host), HOST:PORT, or 'off'. ESXi, QEMU and libnfs ask port 111.",
  }),
  nfsClients: field({
    type: listType(nfsClientType),
    default: [],
    flag: 'nfs-client',
    doc: 'Clients allowed to mount the NFS datastore; none given: all.',
  }),
  nfsReadOnly: field({
    type: booleanType,
    default: false,
    doc: 'Export the NFS datastore read-only.',
  }),
  nfsRequirePrivilegedPort: field({
    type: booleanType,
    default: false,
    doc:
      "MOUNT and NFS calls only from source ports below 1024 (knfsd's `secure`): others get MNT3ERR_ACCES / NFS3ERR_PERM. " +
      'ESXi and the Linux kernel client use such ports; libnfs tools and QEMU only when run as root.',
  }),
  nfsMaxIoSize: field({
    type: sizeType('bytes', 4096),
    default: 1 * MiB,
    doc:
      'Largest NFS READ/WRITE payload (FSINFO rtmax/wtmax), a multiple of 4K up to 16M: larger READs are answered short, ' +
      'larger WRITEs are cut short (RFC 1813, as knfsd); an RPC record over this plus 64K drops the connection.',
  }),
  nfsXenFormat: field({
    type: choiceType('FORMAT', XEN_FORMATS),
    default: 'raw',
    doc:
      'How the NFS datastore shows session disks to XenServer / XCP-ng under /xen/SR-UUID/ (docs/xenserver.md): ' +
      '`raw` (VDI-UUID.raw), `vhd` (VDI-UUID.vhd, the disk plus a fixed-VHD footer), or `off` (no /xen folder).',
  }),
  iscsi: field({
    type: listType(addressType(), { none: true }),
    default: [],
    doc:
      'iSCSI target listen addresses (usually 0.0.0.0:3260): one target per recovery session ' +
      '(iqn.2026-12.org.rebound:session.NAME) and per restore point (iqn.2026-12.org.rebound:point.VM.POINT, read-only), one LUN per disk ' +
      '(docs/hyperv.md). None: no iSCSI.',
  }),
  iscsiChapFile: field({
    type: pathType('FILE', { off: true }),
    default: 'off',
    flag: 'iscsi-chap',
    doc:
      "CHAP for the iSCSI target: a file (mode 600) with a line 'initiator USER SECRET' every initiator must prove, and optionally " +
      "'target USER SECRET' for mutual CHAP; secrets of 12 to 255 characters. 'off': no authentication (docs/hyperv.md).",
  }),
  cacheSize: field({
    type: sizeType('bytes', 1),
    default: 256 * MiB,
    doc: 'Shared cache of uncompressed chunks (restore point reads).',
  }),
  diskCacheSize: field({
    type: sizeType('bytes', 0),
    default: 10 * 1024 * MiB,
    doc:
      'S3 repositories: local disk cache of chunks fetched from the bucket (DATA/cache/chunks), least recently used evicted first; ' +
      'kept across restarts, every cached chunk verified again when read (docs/s3.md). 0: no disk cache.',
  }),
  s3RetryTime: field({
    type: integerType('seconds', { min: 1, placeholder: 'SECONDS' }),
    default: 120,
    doc:
      'S3 repositories: how long one request to the bucket keeps retrying (backoff from 200 ms to 5 s) before it fails: ' +
      'an export read then gets EIO, a backup fails and leaves no point (docs/s3.md).',
  }),
  repoKeyFile: field({
    type: pathType('FILE', { off: true }),
    default: 'off',
    doc:
      'The key file of an encrypted repository (32 bytes, mode 600, `rebound repo keygen FILE`; docs/s3.md, Encryption). ' +
      "'off': the key file `repo init --encrypt` recorded, if any. A key whose fingerprint is not the repository's is refused, " +
      'and so is a key for a repository that is not encrypted; a new local repository is created encrypted with it.',
  }),
  chunkWorkers: field({
    type: integerType('threads'),
    default: 0,
    doc:
      'Worker threads that read, decompress and verify chunks and hash backup chunks, off the event loop. ' +
      '0: one per core (os.availableParallelism()).',
  }),
  chunkSize: field({
    type: sizeType('bytes', 1),
    default: 1 * MiB,
    doc: 'Chunk size of a new repository: a power of two from 4K to 16M, fixed once the repository is created.',
  }),
  nbdMaxInflight: field({
    type: integerType('requests', { min: 1 }),
    default: 256,
    flag: 'max-inflight',
    doc: 'Requests processed at once per NBD connection.',
  }),
  nbdMaxInflightBytes: field({
    type: sizeType('bytes', 1),
    default: 64 * MiB,
    flag: 'max-inflight-bytes',
    doc: 'Payload bytes (READ lengths, WRITE data) of the requests running at once on one NBD connection; a single larger request still runs, alone. Bounds the memory a client that does not read its replies can hold.',
  }),
  maxInflightBytesTotal: field({
    type: sizeType('bytes', 1),
    default: 512 * MiB,
    doc:
      'Payload bytes in flight in the whole daemon: NBD requests (READ lengths, WRITE data, until the reply has left) and NFS ' +
      'READ/WRITE data, shared first come first served. A request over it waits and its connection reads nothing more ' +
      'meanwhile; a single larger request still runs, alone. Bounds the memory many clients together can hold.',
  }),
  memoryTrimIntervalMs: field({
    type: integerType('ms', { min: 0, placeholder: 'MS' }),
    default: 10_000,
    flag: 'memory-trim-interval',
    doc:
      'Every this long the daemon gives memory that malloc holds free back to the kernel (malloc_trim), so its resident size ' +
      'falls after a burst of large requests instead of staying at the peak; 0 turns it off.',
  }),
  nbdMaxConnections: field({
    type: integerType('connections', { min: 1 }),
    default: 1024,
    doc:
      'NBD connections open at once, across all NBD listeners; a connection over the limit is closed as soon as it is accepted ' +
      '(logged with its address), the open ones are not touched. Each connection holds a file descriptor and up to ' +
      'nbdMaxInflightBytes of buffers; nbdkit sets no limit, qemu-nbd serves one client unless --shared.',
  }),
  nbdMaxConnectionsPerClient: field({
    type: integerType('connections', { min: 1 }),
    default: 64,
    doc:
      'NBD connections open at once from one remote address (all Unix-socket clients count as one address); more are closed on ' +
      'accept. 64 leaves room for multi-connection clients (nbdcopy opens 4, qemu one per disk, a host with many VMs one each) ' +
      'while one address cannot take all of nbdMaxConnections. Behind NAT all clients share an address: raise it there.',
  }),
  nbdHandshakeTimeoutMs: field({
    type: integerType('ms', { min: 1, placeholder: 'MS' }),
    default: 30_000,
    flag: 'nbd-handshake-timeout',
    doc: 'An NBD client must finish the handshake (options up to NBD_OPT_GO) this long after connecting or is dropped; bytes it sends do not extend it.',
  }),
  nbdTls: field({
    type: choiceType('MODE', TLS_MODES),
    default: 'off',
    flag: 'tls',
    doc:
      "TLS for NBD (NBD_OPT_STARTTLS, as nbdkit's --tls): 'off' plain text only; 'on' clients may upgrade; 'require' every client " +
      'must upgrade before anything else (LIST shows nothing, other options get NBD_REP_ERR_TLS_REQD). Needs tlsCertDir or tlsPskFile.',
  }),
  tlsCertDir: field({
    type: pathType('DIR', { off: true }),
    default: 'off',
    flag: 'tls-certificates',
    doc:
      "x509 credentials for NBD TLS: a directory with ca-cert.pem, server-cert.pem, server-key.pem and optionally ca-crl.pem " +
      "(qemu's and nbdkit's layout), or 'off'.",
  }),
  tlsVerifyPeer: field({
    type: booleanType,
    default: false,
    doc: "NBD TLS clients must present a certificate signed by tlsCertDir's ca-cert.pem; its subject DN is the client's identity (nbdAccess). PSK clients (tlsPskFile) prove themselves with their key instead.",
  }),
  tlsPskFile: field({
    type: pathType('FILE', { off: true }),
    default: 'off',
    flag: 'tls-psk',
    doc: "TLS-PSK keys for NBD: a psktool file of USERNAME:HEXKEY lines, or 'off'. The username is the client's identity (nbdAccess). May be combined with tlsCertDir.",
  }),
  nbdAccess: field({
    type: listType(accessRuleType),
    default: [],
    flag: 'nbd-access',
    doc:
      'Which NBD TLS identity may open which exports: IDENTITY:PATTERN[,PATTERN...][:ro] (config.json also takes ' +
      '{"identity", "exports", "readOnly"}). IDENTITY is a PSK username or a certificate subject DN (or CN=NAME); PATTERNs are globs ' +
      "on the export, VM or session name. With TLS on and rules given, a connection's identity sees only exports a rule or the " +
      "session's allow list (rebound recover --allow) admits; others look absent. No rules: every TLS client sees every export but " +
      'sessions with an allow list. Ignored with TLS off (docs/security.md).',
  }),
  shutdownTimeoutMs: field({
    type: integerType('ms', { min: 1, placeholder: 'MS' }),
    default: 10_000,
    flag: 'shutdown-timeout',
    doc: 'How long a graceful shutdown waits for in-flight I/O.',
  }),
  logLevel: field({
    type: choiceType('LEVEL', LOG_LEVELS),
    default: 'info',
    doc: 'Log verbosity.',
  }),
  logFormat: field({
    type: choiceType('FORMAT', ['text', 'json'] as const),
    default: 'text',
    doc: 'Format of the log lines on stderr.',
  }),
};

export type ConfigKey = keyof typeof CONFIG_SCHEMA;
type FieldValue<F> = F extends ConfigField<infer T> ? T : never;

/** The daemon's settings, one member per field of CONFIG_SCHEMA (see there for units and defaults). */
export type DaemonConfig = { [K in ConfigKey]: FieldValue<(typeof CONFIG_SCHEMA)[K]> };

/** The fields in schema order (the order of docs, `--help` and printed configs). */
export const CONFIG_KEYS = Object.keys(CONFIG_SCHEMA) as ConfigKey[];

export function configField(key: ConfigKey): ConfigField<unknown> {
  return CONFIG_SCHEMA[key] as ConfigField<unknown>;
}

/** The `rebound serve` flag of a setting, without `--`. */
export function flagName(key: ConfigKey): string {
  return configField(key).flag ?? key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The flag as typed: `--cache-size`, or `--no-export-points` for a switch that is on by default. */
export function flagOf(key: ConfigKey): string {
  const { type, default: def } = configField(key);
  return `--${type.kind === 'switch' && def === true ? 'no-' : ''}${flagName(key)}`;
}

/** The environment variable of a setting; lists have none. */
export function envName(key: ConfigKey): string | undefined {
  if (configField(key).type.kind === 'list') return undefined;
  return `REBOUND_${flagName(key).replace(/-/g, '_').toUpperCase()}`;
}
