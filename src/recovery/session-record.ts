/**
 * The persisted form of a recovery session: DATA/sessions/<name>/session.json, versioned, written
 * durably (temp file, fsync, rename, directory fsync) before every state change takes effect. The
 * session directory also holds the overlays (overlays/<disk>/, the CowOverlay format) and files
 * the front ends keep for the session (e.g. nfs/). Removing the directory removes the session.
 *
 * Versions: 1 (wave 1) kept a migration state per disk (copying, synced, paused, switching,
 * switched, cancelled) and an `overlayRetired` flag; 2 keeps one disk state (disk-state.ts) and
 * publishes per front end. Version 1 records are read and upgraded in memory; they are written
 * back as version 2 at the next change.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../errors.js';
import type { QosLimits } from '../blockdev/layers/qos.js';
import type { FrontEnd } from '../exports/catalog.js';
import { writeFileDurableAsync } from '../util/durable-file.js';
import { DISK_STATES, type DiskState } from './disk-state.js';

export const SESSION_FORMAT = 'rebound-session';
export const SESSION_VERSION = 2;
const RECORD_FILE = 'session.json';

/** What session.json keeps of a disk's migration (absent until the first `migrate`). */
export interface MigrationRecord {
  target: string;
  /** Copy rate limit, bytes/s (null: unlimited). */
  rate: number | null;
  /** End of the copied prefix of pass 1, bytes. */
  cursor: number;
  copiedBytes: number;
  /** Why the migration is paused (target error, cancelled), or null. */
  error: string | null;
  startedAt: string;
  updatedAt: string;
  switchedAt: string | null;
  /** Result of the final comparison after the switch. */
  verified: { units: number; repaired: number } | null;
}

export interface SessionDiskRecord {
  name: string;
  size: number;
  state: DiskState;
  migration: MigrationRecord | null;
}

/** Front ends a session's disks are published on (`iscsi` absent in records older than the iSCSI target: off). */
export type PublishChoice = Record<Exclude<FrontEnd, 'iscsi'>, boolean> & { iscsi?: boolean };

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
  publish: PublishChoice;
  disks: SessionDiskRecord[];
  /** Restore points stored from this session by `rebound commit`. */
  commits: Array<{ pointId: string; at: string }>;
  /** NBD TLS identities admitted to the session's disks (`recover --allow`; absent in older records: none). */
  allow?: string[];
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

/** Writes the record durably; rejects (leaving the old record in place) if it cannot. */
export function saveRecord(dir: string, r: SessionRecord): Promise<void> {
  return writeFileDurableAsync(path.join(dir, RECORD_FILE), JSON.stringify(r, null, 2) + '\n');
}

export interface LoadedRecords {
  records: Array<{ dir: string; record: SessionRecord }>;
  damaged: Array<{ dir: string; error: string }>;
}

/** Every session directory with a record, oldest first; damaged records are reported, not fatal. */
export async function loadRecords(dataDir: string): Promise<LoadedRecords> {
  const root = sessionsDir(dataDir);
  const out: LoadedRecords = { records: [], damaged: [] };
  let names: string[];
  try {
    names = (await fs.promises.readdir(root)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw err;
  }
  for (const name of names) {
    const dir = path.join(root, name);
    const file = path.join(dir, RECORD_FILE);
    let text: string;
    try {
      text = await fs.promises.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
      out.damaged.push({ dir, error: `${file}: ${(err as Error).message}` });
      continue;
    }
    try {
      out.records.push({ dir, record: parseRecord(JSON.parse(text)) });
    } catch (err) {
      out.damaged.push({ dir, error: `${file}: ${(err as Error).message}` });
    }
  }
  out.records.sort((a, b) => a.record.createdAt.localeCompare(b.record.createdAt));
  return out;
}

/** Checks a parsed record and upgrades version 1. */
export function parseRecord(raw: unknown): SessionRecord {
  const r = raw as Record<string, unknown>;
  if (!r || typeof r !== 'object' || r.format !== SESSION_FORMAT) throw new Error('not a session record');
  if (r.version === 1) return upgradeV1(r as unknown as SessionRecordV1);
  if (r.version !== SESSION_VERSION) throw new Error(`session format ${String(r.version)} is not supported (this rebound reads 1 and ${SESSION_VERSION})`);
  const rec = r as unknown as SessionRecord;
  if (typeof rec.name !== 'string' || !Array.isArray(rec.disks)) throw new Error('session record lacks its name or disks');
  for (const d of rec.disks) if (!DISK_STATES.includes(d.state)) throw new Error(`disk ${d.name} has an unknown state '${String(d.state)}'`);
  if (rec.allow !== undefined && !(Array.isArray(rec.allow) && rec.allow.every((a) => typeof a === 'string'))) {
    throw new Error('session record has an allow list that is not a list of identities');
  }
  return rec;
}

interface SessionRecordV1 extends Omit<SessionRecord, 'version' | 'disks' | 'publish'> {
  version: 1;
  publish: { nbd: boolean; nfs: boolean };
  disks: Array<{ name: string; size: number; overlayRetired: boolean; migration: (Omit<MigrationRecord, 'error'> & { error: string | null; state: string }) | null }>;
}

const V1_STATES: Record<string, DiskState> = { copying: 'copying', synced: 'in-step', paused: 'paused', switching: 'switching', switched: 'switched', cancelled: 'paused' };

function upgradeV1(r: SessionRecordV1): SessionRecord {
  return {
    ...r,
    version: SESSION_VERSION,
    // Version 1 had no publish choice for FUSE; FUSE showed every session.
    publish: { nbd: r.publish.nbd, nfs: r.publish.nfs, fuse: true },
    disks: r.disks.map((d) => {
      let state: DiskState = 'running';
      if (d.overlayRetired) state = 'retired';
      else if (d.migration) {
        const s = V1_STATES[d.migration.state];
        if (!s) throw new Error(`disk ${d.name} has an unknown migration state '${d.migration.state}'`);
        state = s;
      }
      if (!d.migration) return { name: d.name, size: d.size, state, migration: null };
      const { state: v1State, ...m } = d.migration;
      return { name: d.name, size: d.size, state, migration: { ...m, error: m.error ?? (v1State === 'cancelled' ? 'cancelled' : null) } };
    }),
  };
}
