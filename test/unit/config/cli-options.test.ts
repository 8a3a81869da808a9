import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { addConfigOptions } from '../../../src/config/cli-options.js';
import { CONFIG_KEYS, flagOf } from '../../../src/config/schema.js';
import { cli } from '../../helpers/cli.js';
import { tempDir } from '../../helpers/images.js';

function parse(argv: string[]) {
  const cmd = new Command('serve').exitOverride().configureOutput({ writeErr: () => {} });
  const read = addConfigOptions(cmd);
  cmd.parse(argv, { from: 'user' });
  return read().values;
}

describe('serve flags from the schema', () => {
  it('passes on only the flags given, as given', () => {
    expect(parse([])).toEqual({});
    expect(parse(['--nbd', 'none', '--nbd', '127.0.0.1:1', '--cache-size', '1G', '--no-export-points', '--demo', '--log-level', 'warn'])).toEqual({
      nbd: ['none', '127.0.0.1:1'],
      cacheSize: '1G',
      exportPoints: false,
      demo: true,
      logLevel: 'warn',
    });
    expect(parse(['--data', 'd', '--export', 'a=x', '--export', 'b=y', '--max-inflight', '8', '--shutdown-timeout', '5', '--nfs-client', '*'])).toEqual({
      dataDir: 'd',
      exports: ['a=x', 'b=y'],
      nbdMaxInflight: '8',
      shutdownTimeoutMs: '5',
      nfsClients: ['*'],
    });
  });
  it('refuses a value outside an enumeration', () => {
    expect(() => parse(['--log-format', 'xml'])).toThrow(/Allowed choices are text, json/);
  });
  it('serve --help shows every flag with its default and unit', async () => {
    const r = await cli(['serve', '--help']);
    expect(r.code).toBe(0);
    const help = r.stdout.replace(/\s+/g, ' ');
    for (const key of CONFIG_KEYS) expect(help).toContain(flagOf(key));
    expect(help).toContain('--cache-size <size>');
    expect(help).toContain('default 256M');
    expect(help).toContain('bytes/s');
    expect(help).toContain('env REBOUND_CACHE_SIZE');
  });
  it('serve --print-config takes sizes with suffixes from flags, environment and config.json', async () => {
    const dir = tempDir();
    const data = path.join(dir, 'data');
    fs.mkdirSync(data);
    fs.writeFileSync(path.join(data, 'config.json'), JSON.stringify({ sessionWarnSize: '10G', chunkSize: '256K' }));
    const r = await cli(['serve', '--data', data, '--cache-size', '64M', '--qos-bandwidth', '10M', '--print-config'], { env: { REBOUND_CHUNK_SIZE: '512K' } });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ cacheSize: 64 << 20, qosBandwidth: 10 << 20, sessionWarnSize: 10 * 1024 ** 3, chunkSize: 512 << 10 });
    const bad = await cli(['serve', '--data', data, '--cache-size', 'big', '--print-config']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("invalid setting cacheSize (--cache-size): invalid size 'big'");
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
