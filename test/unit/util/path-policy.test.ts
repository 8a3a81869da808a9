/** util/path-policy.ts: which paths the HTTP API may read from and write to. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isReboundError } from '../../../src/errors.js';
import { PathPolicy, resolvePath } from '../../../src/util/path-policy.js';

let root: string;
let data: string;
let outside: string;

/** The error code and message `fn` throws, or 'ok'. */
function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    if (!isReboundError(err)) throw err;
    return `${err.code}: ${err.message}`;
  }
}

beforeAll(() => {
  root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-policy-')));
  data = path.join(root, 'data');
  outside = path.join(root, 'outside');
  fs.mkdirSync(path.join(data, 'vm1'), { recursive: true });
  fs.mkdirSync(path.join(root, 'data2'));
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(data, 'vm1', 'disk.img'), 'x');
  fs.writeFileSync(path.join(root, 'data2', 'disk.img'), 'x');
  fs.writeFileSync(path.join(outside, 'secret'), 'x', { mode: 0o600 });
  fs.symlinkSync(path.join(outside, 'secret'), path.join(data, 'to-secret'));
  fs.symlinkSync(outside, path.join(data, 'to-outside-dir'));
  fs.symlinkSync(path.join(data, 'vm1', 'disk.img'), path.join(data, 'inside-link'));
  fs.symlinkSync(path.join(outside, 'not-yet'), path.join(data, 'dangling'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const policy = (): PathPolicy => new PathPolicy({ sourceDirs: [data], targetDirs: [data] });

describe('PathPolicy', () => {
  it('allows files at or below a configured directory, and the resolved path is returned', () => {
    expect(policy().checkSource(path.join(data, 'vm1', 'disk.img'))).toBe(path.join(data, 'vm1', 'disk.img'));
    expect(policy().checkSource(path.join(data, 'inside-link'))).toBe(path.join(data, 'vm1', 'disk.img'));
    expect(outcome(() => policy().checkTarget(path.join(data, 'vm1', 'restored.img')))).toBe('ok');
  });

  it('refuses files outside, naming the setting and its flag', () => {
    const src = outcome(() => policy().checkSource(path.join(outside, 'secret'), 'config file'));
    expect(src).toMatch(/^ERR_PATH_NOT_ALLOWED: config file .*secret is not below a directory in sourceDirs \(--source-dir DIR\)$/);
    const dst = outcome(() => policy().checkTarget('/etc/passwd'));
    expect(dst).toMatch(/^ERR_PATH_NOT_ALLOWED: .*\/etc\/passwd is not below a directory in targetDirs \(--target-dir DIR\)$/);
  });

  it('an empty setting allows nothing, and says so', () => {
    expect(outcome(() => PathPolicy.none().checkSource(path.join(data, 'vm1', 'disk.img')))).toMatch(/sourceDirs \(--source-dir DIR\), which is empty$/);
    expect(outcome(() => PathPolicy.none().checkTarget(path.join(data, 'x')))).toMatch(/^ERR_PATH_NOT_ALLOWED/);
  });

  it('resolves symlinks before checking: a link inside pointing outside is refused', () => {
    expect(outcome(() => policy().checkSource(path.join(data, 'to-secret')))).toMatch(/resolves to .*outside\/secret\) is not below/);
    expect(outcome(() => policy().checkTarget(path.join(data, 'to-secret')))).toMatch(/^ERR_PATH_NOT_ALLOWED/);
    // A new file through a symlinked directory: its deepest existing parent is resolved.
    expect(outcome(() => policy().checkTarget(path.join(data, 'to-outside-dir', 'new.img')))).toMatch(/resolves to .*outside\/new\.img\)/);
    // A dangling symlink: creating the file would follow it.
    expect(outcome(() => policy().checkTarget(path.join(data, 'dangling')))).toMatch(/symbolic link that points nowhere/);
  });

  it('a configured directory that is itself a symlink counts as its target', () => {
    const link = path.join(root, 'data-link');
    fs.symlinkSync(data, link);
    const p = new PathPolicy({ sourceDirs: [link], targetDirs: [] });
    expect(outcome(() => p.checkSource(path.join(data, 'vm1', 'disk.img')))).toBe('ok');
    expect(outcome(() => p.checkSource(path.join(link, 'vm1', 'disk.img')))).toBe('ok');
  });

  it('`..` cannot escape, and relative paths are refused', () => {
    expect(outcome(() => policy().checkSource(`${data}/../outside/secret`))).toMatch(/contains '\.\.'$/);
    expect(outcome(() => policy().checkTarget(`${data}/vm1/../../outside/x`))).toMatch(/contains '\.\.'$/);
    // `to-outside-dir/..` is `root` to the kernel, not `data`.
    expect(outcome(() => policy().checkTarget(`${data}/to-outside-dir/../data/x`))).toMatch(/contains '\.\.'$/);
    expect(outcome(() => policy().checkSource('vm1/disk.img'))).toMatch(/is not an absolute path$/);
  });

  it('is not fooled by a common prefix: /data2 is not below /data', () => {
    expect(outcome(() => policy().checkSource(path.join(root, 'data2', 'disk.img')))).toMatch(/^ERR_PATH_NOT_ALLOWED/);
    expect(outcome(() => policy().checkTarget(`${data}2`))).toMatch(/^ERR_PATH_NOT_ALLOWED/);
    expect(outcome(() => policy().checkTarget(`${data}-new.img`))).toMatch(/^ERR_PATH_NOT_ALLOWED/);
    const slash = new PathPolicy({ sourceDirs: [`${data}/`], targetDirs: [] });
    expect(outcome(() => slash.checkSource(path.join(data, 'vm1', 'disk.img')))).toBe('ok');
    expect(outcome(() => slash.checkSource(path.join(root, 'data2', 'disk.img')))).toMatch(/^ERR_PATH_NOT_ALLOWED/);
  });

  it('a missing target file is allowed through its existing parent; missing directories too', () => {
    expect(policy().checkTarget(path.join(data, 'vm1', 'new.img'))).toBe(path.join(data, 'vm1', 'new.img'));
    expect(policy().checkTarget(path.join(data, 'a', 'b', 'new.img'))).toBe(path.join(data, 'a', 'b', 'new.img'));
    expect(outcome(() => policy().checkTarget(path.join(outside, 'a', 'new.img')))).toMatch(/^ERR_PATH_NOT_ALLOWED/);
  });

  it('block devices only when listed exactly; a /dev entry is a device, not a directory', () => {
    const dev = new PathPolicy({ sourceDirs: ['/dev/null'], targetDirs: ['/dev', '/'] });
    expect(outcome(() => dev.checkSource('/dev/null'))).toBe('ok');
    expect(outcome(() => dev.checkSource('/dev/zero'))).toMatch(/is a device not listed exactly in sourceDirs \(--source-dir DEVICE\)$/);
    // '/dev' and even '/' as entries do not open every device.
    expect(outcome(() => dev.checkTarget('/dev/null'))).toMatch(/is a device not listed exactly in targetDirs/);
    // A device reached through a symlink in an allowed directory is still a device.
    fs.symlinkSync('/dev/zero', path.join(data, 'to-zero'));
    expect(outcome(() => policy().checkSource(path.join(data, 'to-zero')))).toMatch(/is a device \(\/dev\/zero\) not listed exactly/);
    // A symlink to a listed device resolves to it.
    const viaLink = new PathPolicy({ sourceDirs: [path.join(data, 'to-zero')], targetDirs: [] });
    expect(outcome(() => viaLink.checkSource('/dev/zero'))).toBe('ok');
  });
});

describe('resolvePath', () => {
  it('resolves existing paths, missing tails and refuses dangling links', () => {
    expect(resolvePath(path.join(data, 'inside-link'))).toBe(path.join(data, 'vm1', 'disk.img'));
    expect(resolvePath(path.join(data, 'to-outside-dir', 'x', 'y'))).toBe(path.join(outside, 'x', 'y'));
    expect(resolvePath(path.join(data, 'dangling'))).toBeUndefined();
  });
});
