/**
 * Regression (security): the path policy was checked on the name in the request, and the file was
 * opened later by that name. Whoever could rename directories inside an allowed directory could swap
 * one for a symlink between the two steps and have the root daemon read or write (or create) a file
 * elsewhere; the Unix socket of an `nbd+unix://` URI was not checked at all. Now the work that opens
 * a path checks what the open reached (util/path-policy.ts PathGate): the descriptor's real path,
 * the parent directory's descriptor for a file it creates, the socket path as named. Each swap below
 * happens after the request's path would have passed the check, as a racing attacker's would.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openSource } from '../../src/repo/sources.js';
import { openTarget } from '../../src/repo/targets.js';
import { PathPolicy } from '../../src/util/path-policy.js';
import { tempDir } from '../helpers/images.js';

let root: string;
let allowed: string;
let outside: string;
let policy: PathPolicy;

beforeEach(() => {
  root = tempDir('path-race-');
  allowed = path.join(root, 'allowed');
  outside = path.join(root, 'outside');
  fs.mkdirSync(path.join(allowed, 'vm'), { recursive: true });
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(allowed, 'vm', 'disk.raw'), Buffer.alloc(4096, 1));
  fs.writeFileSync(path.join(outside, 'disk.raw'), 'secret: never read by the daemon\n'.padEnd(4096, '.'));
  fs.writeFileSync(path.join(outside, 'precious'), 'must survive\n');
  policy = new PathPolicy({ sourceDirs: [allowed], targetDirs: [allowed] });
});

afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

/** Replaces allowed/vm by a symlink to the outside directory (the attacker's rename). */
function swapDirForSymlink(): void {
  fs.rmSync(path.join(allowed, 'vm'), { recursive: true });
  fs.symlinkSync(outside, path.join(allowed, 'vm'));
}

describe('paths are checked as opened', () => {
  it('a backup source whose directory became a symlink after the check is refused', async () => {
    const file = path.join(allowed, 'vm', 'disk.raw');
    expect(policy.checkSource(file)).toBe(file);
    swapDirForSymlink();
    await expect(openSource(file, { gate: policy.gate('source', 'backup source') })).rejects.toMatchObject({ code: 'ERR_PATH_NOT_ALLOWED' });
    // Without a gate (in-process callers) the name is followed, as before.
    const s = await openSource(file);
    await s.device.close();
  });

  it('an existing restore target reached through a swapped directory is refused and not written', async () => {
    const file = path.join(allowed, 'vm', 'precious');
    fs.writeFileSync(file, 'inside\n');
    expect(policy.checkTarget(file)).toBe(file);
    swapDirForSymlink();
    await expect(openTarget(file, 4096, { startOver: true, gate: policy.gate('target', 'restore target') })).rejects.toMatchObject({ code: 'ERR_PATH_NOT_ALLOWED' });
    expect(fs.readFileSync(path.join(outside, 'precious'), 'utf8')).toBe('must survive\n');
  });

  it('a new restore target is not created outside when its directory is swapped', async () => {
    const file = path.join(allowed, 'vm', 'new.raw');
    expect(policy.checkTarget(file)).toBe(file);
    swapDirForSymlink();
    await expect(openTarget(file, 4096, { startOver: true, gate: policy.gate('target', 'restore target') })).rejects.toMatchObject({ code: 'ERR_PATH_NOT_ALLOWED' });
    expect(fs.existsSync(path.join(outside, 'new.raw'))).toBe(false);
  });

  it('a symlink planted at a new target name is not followed', async () => {
    const file = path.join(allowed, 'vm', 'new.raw');
    expect(policy.checkTarget(file)).toBe(file);
    fs.symlinkSync(path.join(outside, 'created-by-daemon'), file); // dangling: O_CREAT would follow it
    await expect(openTarget(file, 4096, { startOver: true, gate: policy.gate('target', 'restore target') })).rejects.toMatchObject({ code: expect.stringMatching(/ERR_PATH_NOT_ALLOWED|ERR_TARGET_OPEN_FAILED/) });
    expect(fs.existsSync(path.join(outside, 'created-by-daemon'))).toBe(false);
  });

  it('allowed files still open and new ones are created, through the gate', async () => {
    const gate = policy.gate('target', 'restore target');
    const t = await openTarget(path.join(allowed, 'vm', 'new.raw'), 8192, { startOver: true, gate });
    expect(t.fresh).toBe(true);
    await t.write(new Uint8Array(4096).fill(7), 4096);
    await t.close();
    expect(fs.statSync(path.join(allowed, 'vm', 'new.raw')).size).toBe(8192);
    const s = await openSource(path.join(allowed, 'vm', 'disk.raw'), { gate: policy.gate('source', 'backup source') });
    expect(s.device.size).toBe(4096);
    await s.device.close();
  });

  it('the Unix socket of an nbd+unix URI is checked as a path', async () => {
    const uri = `nbd+unix:///x?socket=${encodeURIComponent(path.join(outside, 'any.sock'))}`;
    await expect(openSource(uri, { gate: policy.gate('source', 'backup source') })).rejects.toMatchObject({ code: 'ERR_PATH_NOT_ALLOWED' });
    await expect(openTarget(uri, 4096, { gate: policy.gate('target', 'restore target') })).rejects.toMatchObject({ code: 'ERR_PATH_NOT_ALLOWED' });
  });
});
