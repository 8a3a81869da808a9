/**
 * The CHAP secrets file of the iSCSI target (config `iscsiChapFile`, `--iscsi-chap FILE`):
 *
 *     # who may log in (one-way CHAP: every initiator must prove this)
 *     initiator USER SECRET
 *     # optional: what the target answers when the initiator asks (mutual CHAP)
 *     target USER SECRET
 *
 * Secrets are 12 to 255 characters (Windows' initiator wants 12 to 16), without whitespace. The file
 * holds secrets: rebound refuses one that other users can read or write (mode must deny group and
 * others), as ssh does with its keys.
 */
import fs from 'node:fs';
import { errorText, ReboundError } from '../errors.js';
import type { ChapCredentials } from './login.js';

export function loadChapFile(file: string): ChapCredentials {
  let text: string;
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `cannot read the iSCSI CHAP file '${file}': ${errorText(err)}`, { cause: err });
  }
  if ((st.mode & 0o077) !== 0) throw new ReboundError('ERR_INVALID_ARGUMENT', `the iSCSI CHAP file '${file}' is readable or writable by others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`);
  let initiator: { user: string; secret: string } | undefined;
  let target: { user: string; secret: string } | undefined;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const parts = line.split(/\s+/);
    const where = `${file}:${i + 1}`;
    if (parts.length !== 3 || (parts[0] !== 'initiator' && parts[0] !== 'target')) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `${where}: expected 'initiator USER SECRET' or 'target USER SECRET'`);
    }
    const [kind, user, secret] = parts as [string, string, string];
    if (secret.length < 12 || secret.length > 255) throw new ReboundError('ERR_INVALID_ARGUMENT', `${where}: a CHAP secret has 12 to 255 characters`);
    if (user.length > 223) throw new ReboundError('ERR_INVALID_ARGUMENT', `${where}: user name too long`);
    if ((kind === 'initiator' ? initiator : target) !== undefined) throw new ReboundError('ERR_INVALID_ARGUMENT', `${where}: a second '${kind}' line`);
    if (kind === 'initiator') initiator = { user, secret };
    else target = { user, secret };
  });
  if (!initiator) throw new ReboundError('ERR_INVALID_ARGUMENT', `${file}: no 'initiator USER SECRET' line`);
  if (target && target.secret === initiator.secret) throw new ReboundError('ERR_INVALID_ARGUMENT', `${file}: the target's secret must differ from the initiator's (RFC 7143 §12.1.3)`);
  return { ...initiator, ...(target ? { targetUser: target.user, targetSecret: target.secret } : {}) };
}
