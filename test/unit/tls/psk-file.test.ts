/** psktool files: USERNAME:HEXKEY per line; every error names the line. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ReboundError } from '../../../src/errors.js';
import { loadPskFile, parsePskText } from '../../../src/tls/psk-file.js';
import { tempDir } from '../../helpers/images.js';

const K1 = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';

function failure(text: string): string {
  try {
    parsePskText(text, 'keys.psk');
  } catch (err) {
    expect(err).toBeInstanceOf(ReboundError);
    expect((err as ReboundError).code).toBe('ERR_TLS_CREDENTIALS');
    return (err as Error).message;
  }
  throw new Error('parsed');
}

describe('parsePskText', () => {
  it('reads psktool lines, skipping blank lines and CRs', () => {
    const keys = parsePskText(`alice:${K1}\r\n\nbob:0A0b\n`);
    expect([...keys.keys()]).toEqual(['alice', 'bob']);
    expect(keys.get('alice')).toEqual(Buffer.from(K1, 'hex'));
    expect(keys.get('bob')).toEqual(Buffer.from([0x0a, 0x0b]));
  });

  it('names the line of every mistake', () => {
    expect(failure(`alice:${K1}\nbob\n`)).toBe("keys.psk line 2: expected USERNAME:HEXKEY, found no ':'");
    expect(failure(`:${K1}`)).toBe('keys.psk line 1: the username is empty');
    expect(failure('al ice:00')).toMatch(/line 1: the username "al ice" contains white space/);
    expect(failure('alice:')).toMatch(/line 1: the key of "alice" is empty/);
    expect(failure('\n\nalice:xyz')).toMatch(/line 3: the key of "alice" is not hexadecimal/);
    expect(failure('alice:abc')).toMatch(/line 1: the key of "alice" has an odd number of hex digits/);
    expect(failure(`alice:${K1}\nalice:00`)).toMatch(/line 2: the username "alice" appears twice/);
    expect(failure('\n\n')).toMatch(/has no USERNAME:HEXKEY lines/);
  });
});

describe('loadPskFile', () => {
  it('loads a file, warns when others can read it, and names a missing file', async () => {
    const dir = tempDir('rebound-psk-');
    try {
      const f = path.join(dir, 'keys.psk');
      fs.writeFileSync(f, `alice:${K1}\n`, { mode: 0o600 });
      const ok = await loadPskFile(f);
      expect(ok.keys.size).toBe(1);
      expect(ok.warnings).toEqual([]);
      fs.chmodSync(f, 0o644);
      expect((await loadPskFile(f)).warnings[0]).toMatch(/readable by group or others \(mode 0644\)/);
      const err = await loadPskFile(path.join(dir, 'nope')).catch((e: unknown) => e);
      expect((err as ReboundError).code).toBe('ERR_TLS_CREDENTIALS');
      expect((err as Error).message).toMatch(/nope cannot be read: it does not exist/);
      const dirErr = await loadPskFile(dir).catch((e: unknown) => e);
      expect((dirErr as Error).message).toMatch(/is not a regular file/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
