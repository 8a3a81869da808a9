/**
 * The restore point manifest (repo/vms/<vm>/<point>/point.json). Written last when a backup
 * commits; its presence makes the point complete.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../errors.js';

export const POINT_FORMAT = 'rebound-point';
export const POINT_VERSION = 1;

export type BackupLabel = 'crash' | 'fs' | 'app';
export const LABELS: BackupLabel[] = ['crash', 'fs', 'app'];

export interface DiskManifest {
  name: string;
  size: number;
  chunkSize: number;
  /** Index file name within the point directory. */
  index: string;
  /** What it was read from (a path or an NBD URI). */
  source: string;
  chunks: number;
  zeroChunks: number;
  /** Chunks this backup stored (not found in the repository before). */
  newChunks: number;
  /** Bytes written to the repository for those chunks (compressed). */
  newBytes: number;
  /** Bytes read from the source. */
  readBytes: number;
  /** Set when only the chunks a dirty bitmap marked were read. */
  incremental?: { bitmap: string; basePoint: string; dirtyChunks: number };
}

export interface PointManifest {
  format: typeof POINT_FORMAT;
  version: number;
  vm: string;
  id: string;
  createdAt: string;
  label: BackupLabel;
  tags: string[];
  disks: DiskManifest[];
  /** VM configuration files stored with the point (names under config/). */
  configs: string[];
  durationMs: number;
}

export function parseManifest(text: string, where: string): PointManifest {
  let m: PointManifest;
  try {
    m = JSON.parse(text) as PointManifest;
  } catch (err) {
    throw new ReboundError('ERR_REPO_CORRUPT', `${where}: not valid JSON`, { cause: err });
  }
  // Any JSON may be in the file (null, a number, an object whose version is itself an object).
  if (typeof m !== 'object' || m === null || m.format !== POINT_FORMAT) throw new ReboundError('ERR_REPO_CORRUPT', `${where}: not a restore point manifest`);
  if (m.version !== POINT_VERSION) throw new ReboundError('ERR_REPO_CORRUPT', `${where}: manifest version ${JSON.stringify(m.version)} is not supported`);
  return m;
}

/** Relative paths of the files of a built point under `dir` besides its point.json (indexes, config/...). */
export function builtPointFiles(dir: string, sub = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, sub), { withFileTypes: true })) {
    const rel = sub ? `${sub}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...builtPointFiles(dir, rel));
    else if (e.isFile() && rel !== 'point.json') out.push(rel);
  }
  return out;
}
