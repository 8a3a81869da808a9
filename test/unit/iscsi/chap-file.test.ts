import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadChapFile } from '../../../src/iscsi/chap-file.js';
import { tempDir } from '../../helpers/images.js';

const dir = tempDir('rebound-chap-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function file(text: string, mode = 0o600): string {
  const f = path.join(dir, `chap-${Math.random().toString(36).slice(2)}`);
  fs.writeFileSync(f, text, { mode });
  fs.chmodSync(f, mode);
  return f;
}

describe('iSCSI CHAP file', () => {
  it('reads one-way and mutual credentials', () => {
    expect(loadChapFile(file('# comment\ninitiator host1 secretsecret12\n'))).toEqual({ user: 'host1', secret: 'secretsecret12' });
    expect(loadChapFile(file('initiator host1 secretsecret12\ntarget rebound othersecret123\n'))).toEqual({
      user: 'host1',
      secret: 'secretsecret12',
      targetUser: 'rebound',
      targetSecret: 'othersecret123',
    });
  });
  it('refuses files others can read, short secrets, equal secrets and bad lines', () => {
    expect(() => loadChapFile(file('initiator a secretsecret12\n', 0o644))).toThrow(/chmod 600/);
    expect(() => loadChapFile(file('initiator a short\n'))).toThrow(/12 to 255/);
    expect(() => loadChapFile(file('initiator a secretsecret12\ntarget b secretsecret12\n'))).toThrow(/differ/);
    expect(() => loadChapFile(file('user a secretsecret12\n'))).toThrow(/expected/);
    expect(() => loadChapFile(file('target b secretsecret12\n'))).toThrow(/no 'initiator/);
    expect(() => loadChapFile(path.join(dir, 'missing'))).toThrow(/cannot read/);
  });
});
