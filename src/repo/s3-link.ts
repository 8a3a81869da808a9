/**
 * The S3 link: DATA/repo/s3.json says that this data directory's repository lives in a bucket
 * (docs/s3.md). It holds where (endpoint, region, bucket, prefix, addressing), optional
 * credentials (else the AWS SDK's usual chain: AWS_* variables, ~/.aws profiles), the storage
 * class for new objects, and this gateway's id (several gateways share one bucket). The
 * repository's own descriptor (repo.json) is in the bucket. Mode 600: it may hold a secret.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ReboundError } from '../errors.js';
import { writeFileDurable } from '../util/durable-file.js';

export const S3_LINK_FORMAT = 'rebound-s3-link';
export const S3_LINK_VERSION = 1;

/** Storage classes whose objects cannot be read at once: gc, verify and restores would break. */
export const ARCHIVE_STORAGE_CLASSES = ['GLACIER', 'DEEP_ARCHIVE'];

export interface S3Link {
  format: typeof S3_LINK_FORMAT;
  version: number;
  /** http(s)://host[:port] (no path). */
  endpoint: string;
  region: string;
  bucket: string;
  /** '' or a key prefix ending in '/'. */
  prefix: string;
  addressing: 'path' | 'virtual';
  storageClass?: string;
  profile?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** This gateway's id: names its leases and backup markers in the bucket. */
  gateway: string;
  /** An encrypted repository's key file (absolute), as `repo init --encrypt` gave it; config repoKeyFile overrides it. */
  keyFile?: string;
}

export function linkFile(dataDir: string): string {
  return path.join(dataDir, 'repo', 's3.json');
}

export function readLink(dataDir: string): S3Link | undefined {
  const file = linkFile(dataDir);
  if (!fs.existsSync(file)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ReboundError('ERR_REPO_CORRUPT', `${file} is not valid JSON: ${(err as Error).message}`);
  }
  const l = raw as S3Link;
  if (l?.format !== S3_LINK_FORMAT) throw new ReboundError('ERR_REPO_CORRUPT', `${file} is not a rebound S3 link`);
  if (l.version !== S3_LINK_VERSION) throw new ReboundError('ERR_REPO_CORRUPT', `${file} has S3 link version ${l.version}; this rebound reads ${S3_LINK_VERSION}`);
  return checkLink(l, file);
}

export interface LinkRequest {
  url: string;
  bucket: string;
  prefix?: string;
  region?: string;
  virtualHost?: boolean;
  storageClass?: string;
  profile?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
}

/** Builds (and validates) a link from `repo init` options. */
export function makeLink(req: LinkRequest): S3Link {
  let prefix = (req.prefix ?? '').replace(/^\/+/, '');
  if (prefix && !prefix.endsWith('/')) prefix += '/';
  if ((req.accessKeyId === undefined) !== (req.secretAccessKey === undefined)) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', 'give both --access-key-id and --secret-access-key, or neither (then the AWS_* variables or a profile are used)');
  }
  return checkLink(
    {
      format: S3_LINK_FORMAT,
      version: S3_LINK_VERSION,
      endpoint: req.url.replace(/\/+$/, ''),
      region: req.region ?? process.env.AWS_REGION ?? 'us-east-1',
      bucket: req.bucket,
      prefix,
      addressing: req.virtualHost ? 'virtual' : 'path',
      ...(req.storageClass ? { storageClass: req.storageClass.toUpperCase() } : {}),
      ...(req.profile ? { profile: req.profile } : {}),
      ...(req.accessKeyId ? { credentials: { accessKeyId: req.accessKeyId, secretAccessKey: req.secretAccessKey! } } : {}),
      gateway: `${os.hostname().replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 40)}-${crypto.randomBytes(4).toString('hex')}`,
    },
    's3 options',
  );
}

export function writeLink(dataDir: string, link: S3Link): void {
  const file = linkFile(dataDir);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileDurable(file, JSON.stringify(link, null, 2) + '\n');
  fs.chmodSync(file, 0o600);
}

function checkLink(l: S3Link, where: string): S3Link {
  const bad = (msg: string): never => {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `${where}: ${msg}`);
  };
  let u: URL;
  try {
    u = new URL(l.endpoint);
  } catch {
    return bad(`endpoint '${l.endpoint}' is not a URL (http://HOST:PORT or https://HOST)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') bad(`endpoint '${l.endpoint}' must be http:// or https://`);
  if (u.pathname !== '/' || u.search) bad(`endpoint '${l.endpoint}' must not have a path (the bucket is --bucket, a key prefix --prefix)`);
  // S3 bucket naming rules (the part every provider shares).
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(l.bucket ?? '') || l.bucket.includes('..')) {
    bad(`bucket name '${l.bucket}' is not valid: 3-63 lower-case letters, digits, '.' and '-'`);
  }
  if (typeof l.prefix !== 'string' || l.prefix.includes('//') || l.prefix.length > 512) bad(`prefix '${l.prefix}' is not valid`);
  if (l.addressing !== 'path' && l.addressing !== 'virtual') bad(`addressing must be 'path' or 'virtual'`);
  if (!l.region || typeof l.region !== 'string') bad('a region is needed (any string for Ceph RGW and MinIO)');
  if (l.storageClass !== undefined) {
    if (ARCHIVE_STORAGE_CLASSES.includes(l.storageClass)) {
      bad(
        `storage class ${l.storageClass} is an archive class: its objects must be restored before they can be read, ` +
          `which breaks instant recovery, verify and gc. Use STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING (without archive tiers) or GLACIER_IR`,
      );
    }
    if (!/^[A-Z_]{2,32}$/.test(l.storageClass)) bad(`storage class '${l.storageClass}' is not valid`);
  }
  if (l.keyFile !== undefined && (typeof l.keyFile !== 'string' || !l.keyFile.startsWith('/'))) bad('keyFile must be an absolute path');
  if (typeof l.gateway !== 'string' || !/^[A-Za-z0-9.-]{1,64}$/.test(l.gateway)) bad('gateway id is missing or malformed');
  return l;
}
