/**
 * Reads a TLS-PSK key file in GnuTLS `psktool` format, the one nbdkit (`--tls-psk FILE`) and
 * qemu (`tls-creds-psk,dir=DIR` reads DIR/keys.psk) use:
 *
 *   username:hexkey      one identity per line, e.g. `alice:6f1d...` (psktool -u alice -p FILE)
 *
 * Blank lines (and a final newline) are skipped; anything else that is not `name:hex` is an
 * error naming the line. Usernames are unique, non-empty and without ':'; keys are an even number
 * of hex digits (psktool writes 32 bytes; at least 1 byte is accepted, as GnuTLS does).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { ReboundError } from '../errors.js';
import type { Logger } from '../util/log.js';

export interface PskFile {
  file: string;
  /** username → key bytes. */
  keys: Map<string, Buffer>;
  warnings: string[];
}

/** Parses psktool text. `name` is used in error messages. Throws ERR_TLS_CREDENTIALS. */
export function parsePskText(text: string, name = 'PSK file'): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const where = `${name} line ${i + 1}`;
    if (line.trim() === '') return;
    const colon = line.indexOf(':');
    if (colon < 0) throw pskError(`${where}: expected USERNAME:HEXKEY, found no ':'`);
    const user = line.slice(0, colon);
    const hex = line.slice(colon + 1).trim();
    if (user === '') throw pskError(`${where}: the username is empty`);
    if (/[\s]/.test(user)) throw pskError(`${where}: the username ${JSON.stringify(user)} contains white space`);
    if (hex === '') throw pskError(`${where}: the key of ${JSON.stringify(user)} is empty`);
    if (!/^[0-9a-fA-F]+$/.test(hex)) throw pskError(`${where}: the key of ${JSON.stringify(user)} is not hexadecimal`);
    if (hex.length % 2 !== 0) throw pskError(`${where}: the key of ${JSON.stringify(user)} has an odd number of hex digits`);
    if (keys.has(user)) throw pskError(`${where}: the username ${JSON.stringify(user)} appears twice`);
    keys.set(user, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw pskError(`${name} has no USERNAME:HEXKEY lines`);
  return keys;
}

/** Reads and parses a PSK file; warns when it is readable by group or others. */
export async function loadPskFile(file: string, options: { logger?: Logger } = {}): Promise<PskFile> {
  const abs = path.resolve(file);
  let text: string;
  let mode: number;
  try {
    const st = await fs.stat(abs);
    if (!st.isFile()) throw pskError(`TLS PSK file ${abs} is not a regular file`);
    mode = st.mode;
    text = await fs.readFile(abs, 'utf8');
  } catch (err) {
    if (err instanceof ReboundError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'it does not exist' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : String(err);
    throw new ReboundError('ERR_TLS_CREDENTIALS', `TLS PSK file ${abs} cannot be read: ${why}`, { cause: err });
  }
  const keys = parsePskText(text, abs);
  const warnings: string[] = [];
  if ((mode & 0o044) !== 0) {
    warnings.push(
      `${abs} is readable by group or others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); chmod 600 it so only its owner can read the keys`,
    );
  }
  for (const w of warnings) options.logger?.warn(`TLS: ${w}`);
  return { file: abs, keys, warnings };
}

function pskError(message: string): ReboundError {
  return new ReboundError('ERR_TLS_CREDENTIALS', message);
}
