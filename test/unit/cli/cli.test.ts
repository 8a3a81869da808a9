/** The CLI against an in-process daemon (ports 0, temp data directory). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig, validateConfig } from '../../../src/config/schema.js';
import { Daemon } from '../../../src/daemon/daemon.js';
import { silentLogger } from '../../../src/util/log.js';
import { cli, cliIo } from '../../helpers/cli.js';
import { main } from '../../../src/cli/main.js';
import { makeImage, tempDir } from '../../helpers/images.js';

let dir: string;
let daemon: Daemon;
let server: string;

beforeAll(async () => {
  dir = tempDir();
  makeImage(path.join(dir, 'a.img'), { size: 1 << 20, data: [[0, 4096]] });
  const config = validateConfig({
    ...defaultConfig({}),
    sourceDirs: [os.tmpdir()], // the API may back up and restore the test's temp files
    targetDirs: [os.tmpdir()],
    dataDir: path.join(dir, 'data'),
    nbd: ['127.0.0.1:0'],
    http: '127.0.0.1:0',
    exports: [`a=${path.join(dir, 'a.img')},desc=image a`, 'm=memory:2M', `c=${path.join(dir, 'a.img')},cow,quota=512K`],
  });
  daemon = await Daemon.start(config, silentLogger);
  server = `http://${daemon.endpoints.http}`;
});
afterAll(async () => {
  await daemon.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('rebound CLI', () => {
  it('exports: a table with names, sizes, modes and URIs', async () => {
    const r = await cli(['--server', server, '--data', daemon.config.dataDir, 'exports']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^NAME\s+SIZE\s+MODE\s+OVERLAY\s+CONN\s+URI/);
    expect(r.stdout).toMatch(new RegExp(`a \\*\\s+1 MiB\\s+ro\\s+-\\s+0\\s+nbd://${daemon.endpoints.nbd[0]}/a`));
    expect(r.stdout).toMatch(/m\s+2 MiB\s+rw/);
    expect(r.stdout).toMatch(/c\s+1 MiB\s+cow\s+0 B \/ 512 KiB\s+0/);
  });
  it('exports --json, with the server from REBOUND_SERVER', async () => {
    const r = await cli(['exports', '--json'], { env: { REBOUND_SERVER: server, REBOUND_DATA: path.join(dir, 'data') } });
    const body = JSON.parse(r.stdout);
    expect(body.exports.map((e: { name: string }) => e.name)).toEqual(['a', 'm', 'c']);
    expect(body.exports[0].description).toBe('image a');
    expect(body.exports[2].overlay).toMatchObject({ allocatedBytes: 0, maxBytes: 512 * 1024, blockSize: 4096, dataBlocks: 0 });
    expect(body.exports[2].overlay.dir).toBe(path.join(dir, 'data', 'overlays', 'c'));
  });
  it('status and config', async () => {
    const s = await cli(['--server', server, '--data', daemon.config.dataDir, 'status']);
    expect(s.stdout).toContain(`pid ${process.pid}`);
    expect(s.stdout).toContain('3 export(s)');
    const c = await cli(['--server', server, '--data', daemon.config.dataDir, 'config']);
    expect(JSON.parse(c.stdout).dataDir).toBe(path.join(dir, 'data'));
  });
  it('explains an unreachable daemon', async () => {
    const r = await cli(['--server', 'http://127.0.0.1:1', 'exports']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('cannot reach the rebound daemon at http://127.0.0.1:1');
    expect(r.stderr).toContain('REBOUND_SERVER');
  });
  it('--help lists commands; serve --help explains every option; usage errors exit 2', async () => {
    const h = await cli(['--help']);
    expect(h.code).toBe(0);
    for (const cmd of ['serve', 'exports', 'status', 'config']) expect(h.stdout).toContain(cmd);
    const s = await cli(['serve', '--help']);
    for (const opt of ['--data', '--nbd', '--nbd-socket', '--http', '--export', '--demo', '--log-level', 'memory:SIZE']) {
      expect(s.stdout).toContain(opt);
    }
    expect((await cli(['frobnicate'])).code).toBe(2);
    expect((await cli(['exports', '--bogus'])).code).toBe(2);
  });
});

describe('rebound serve (in-process)', () => {
  it('starts, prints a banner with URIs and a qemu-img line, refuses a second daemon, stops on the signal', async () => {
    const data = path.join(dir, 'serve-data');
    const stop = new AbortController();
    const c = cliIo({ stopSignal: stop.signal, cwd: dir });
    const running = main(['serve', '--data', data, '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0', '--export', 'x=a.img', '--log-level', 'error'], c.io);
    for (let i = 0; i < 100 && !c.out().includes('Press Ctrl-C'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(c.out()).toMatch(/x\s+1 MiB\s+read-only\s+nbd:\/\/127\.0\.0\.1:\d+\/x/);
    expect(c.out()).toMatch(/qemu-img info nbd:\/\/127\.0\.0\.1:\d+\/x/);
    expect(fs.existsSync(path.join(data, 'daemon.lock'))).toBe(true);

    const second = await cli(['serve', '--data', data, '--nbd', '127.0.0.1:0', '--http', 'off']);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain('is in use by another rebound daemon');

    stop.abort();
    expect(await running).toBe(0);
    expect(fs.existsSync(path.join(data, 'daemon.lock'))).toBe(false);
  });
  it('fails clearly on a missing image and releases the data directory', async () => {
    const data = path.join(dir, 'bad-data');
    const r = await cli(['serve', '--data', data, '--nbd', '127.0.0.1:0', '--http', 'off', '--export', 'x=/nonexistent.img']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("cannot open image '/nonexistent.img'");
    expect(fs.existsSync(path.join(data, 'daemon.lock'))).toBe(false);
  });
  it('--print-config shows the effective config', async () => {
    const r = await cli(['serve', '--data', path.join(dir, 'pc'), '--nbd', '127.0.0.1:1234', '--print-config']);
    expect(JSON.parse(r.stdout)).toMatchObject({ nbd: ['127.0.0.1:1234'], http: '127.0.0.1:10810' });
  });
});
