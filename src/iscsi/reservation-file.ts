/**
 * Persistent reservations that persist through power loss (APTPL, SPC-4 §5.13.5): the state of a
 * session disk's reservations as a small JSON file in the session's own directory,
 * `<filesDir>/iscsi/<disk>.pr.json`, written durably (temp file, fsync, rename, directory fsync)
 * before the PERSISTENT RESERVE OUT that changed it is answered, and gone with the session.
 *
 * Format (version 1): { version, generation, registrations: [{ id, initiatorName, isid (hex),
 * key (decimal string) }], reservation?: { holder (an id), type } }. A file that does not parse is
 * reported to the caller, which starts empty (the cluster registers again).
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileDurableAsync } from '../util/durable-file.js';

export const PR_FILE_VERSION = 1;

export interface PrState {
  generation: number;
  registrations: Array<{ id: string; initiatorName: string; isid: string; key: string }>;
  reservation?: { holder: string; type: number };
}

export interface PrStore {
  /** Saves the state durably; undefined removes it (APTPL turned off). */
  save(state: PrState | undefined): Promise<void>;
}

export class ReservationFile implements PrStore {
  readonly file: string;

  constructor(file: string) {
    this.file = file;
  }

  static forSessionDisk(filesDir: string, disk: string): ReservationFile {
    return new ReservationFile(path.join(filesDir, 'iscsi', `${disk}.pr.json`));
  }

  /** The saved state, or undefined when there is none. Throws on a file that is not a valid version-1 state. */
  async load(): Promise<PrState | undefined> {
    let text: string;
    try {
      text = await fs.promises.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    return parsePrState(text);
  }

  async save(state: PrState | undefined): Promise<void> {
    if (!state) {
      await fs.promises.rm(this.file, { force: true });
      return;
    }
    await fs.promises.mkdir(path.dirname(this.file), { recursive: true });
    await writeFileDurableAsync(this.file, JSON.stringify({ version: PR_FILE_VERSION, ...state }) + '\n');
  }
}

export function parsePrState(text: string): PrState {
  const v = JSON.parse(text) as Record<string, unknown>;
  if (v.version !== PR_FILE_VERSION) throw new Error(`unknown reservation file version ${String(v.version)}`);
  const gen = v.generation;
  if (typeof gen !== 'number' || !Number.isInteger(gen) || gen < 0 || gen > 0xffffffff) throw new Error('bad generation');
  if (!Array.isArray(v.registrations)) throw new Error('bad registrations');
  const registrations = v.registrations.map((r: unknown) => {
    const x = r as Record<string, unknown>;
    if (typeof x.id !== 'string' || typeof x.initiatorName !== 'string' || typeof x.isid !== 'string' || !/^[0-9a-f]{12}$/.test(x.isid)) throw new Error('bad registration');
    if (typeof x.key !== 'string' || !/^\d{1,20}$/.test(x.key) || BigInt(x.key) === 0n || BigInt(x.key) >= 1n << 64n) throw new Error('bad key');
    return { id: x.id, initiatorName: x.initiatorName, isid: x.isid, key: x.key };
  });
  const res = v.reservation as Record<string, unknown> | undefined;
  if (res !== undefined && (typeof res.holder !== 'string' || ![1, 3, 5, 6, 7, 8].includes(res.type as number))) throw new Error('bad reservation');
  return { generation: gen, registrations, ...(res ? { reservation: { holder: res.holder as string, type: res.type as number } } : {}) };
}
