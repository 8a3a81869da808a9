/**
 * The persisted form of a recovery session: DATA/sessions/<name>/session.json (versioned; written
 * durably — temp file, fsync, rename — on every state change). The session directory also holds
 * the overlays (overlays/<disk>/, the CowOverlay format) and files the front ends keep for the
 * session (e.g. nfs/ for files a hypervisor creates in the datastore). Removing the directory
 * removes the session.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../errors.js';
import type { QosLimits } from '../blockdev/layers/qos.js';
import { writeFileDurable } from '../util/durable-file.js';
import type { MigrationRecord } from './migration.js';

export const SESSION_FORMAT = 'rebound-session';
export const SESSION_VERSION = 1;
const RECORD_FILE = 'session.json';

export interface SessionDiskRecord {
  name: string;
  size: number;
  migration: MigrationRecord | null;
  /** The overlay was retired after a switch: the disk is served by its migration target alone. */
  overlayRetired: boolean;
}

export interface SessionRecord {
  format: typeof SESSION_FORMAT;
  version: number;
  name: string;
  vm: string;
  pointId: string;
  createdAt: string;
  /** Overlay quota per disk, bytes (null: none). */
  quota: number | null;
  qos: QosLimits;
  publish: { nbd: boolean; nfs: boolean };
  disks: SessionDiskRecord[];
  /** Restore points stored from this session by `rebound commit`. */
  commits: Array<{ pointId: string; at: string }>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkSessionName(name: string): void {
  if (!NAME.test(name)) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `invalid session name '${name}': 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit`);
  }
}

export function sessionsDir(dataDir: string): string {
  return path.join(dataDir, 'sessions');
}

export function saveRecord(dir: string, r: SessionRecord): void {
  writeFileDurable(path.join(dir, RECORD_FILE), JSON.stringify(r, null, 2) + '\n');
}

/** Every session directory with a record, oldest first; damaged records are reported, not fatal. */
export function loadRecords(dataDir: string): { records: Array<{ dir: string; record: SessionRecord }>; damaged: Array<{ dir: string; error: string }> } {
  const root = sessionsDir(dataDir);
  const records: Array<{ dir: string; record: SessionRecord }> = [];
  const damaged: Array<{ dir: string; error: string }> = [];
  if (!fs.existsSync(root)) return { records, damaged };
  for (const name of fs.readdirSync(root).sort()) {
    const dir = path.join(root, name);
    const file = path.join(dir, RECORD_FILE);
    if (!fs.existsSync(file)) continue;
    try {
      const r = JSON.parse(fs.readFileSync(file, 'utf8')) as SessionRecord;
      if (r.format !== SESSION_FORMAT) throw new Error('not a session record');
      if (r.version !== SESSION_VERSION) throw new Error(`session format ${r.version} is not supported (this rebound reads ${SESSION_VERSION})`);
      records.push({ dir, record: r });
    } catch (err) {
      damaged.push({ dir, error: `${file}: ${(err as Error).message}` });
    }
  }
  records.sort((a, b) => a.record.createdAt.localeCompare(b.record.createdAt));
  return { records, damaged };
}
