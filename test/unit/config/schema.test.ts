import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CONFIG_KEYS,
  CONFIG_SCHEMA,
  defaultConfig,
  envName,
  flagName,
  loadConfig,
  mergeConfig,
  plainConfig,
  readConfigFile,
  validateConfig,
} from '../../../src/config/schema.js';
import { configField } from '../../../src/config/fields.js';
import { tempDir } from '../../helpers/images.js';

const GiB = 1024 ** 3;

describe('config schema', () => {
  it('gives every field a doc, a unit or syntax, and a default its own kind reads back', () => {
    for (const key of CONFIG_KEYS) {
      const { doc, type, default: def } = configField(key);
      expect(doc.length, key).toBeGreaterThan(10);
      expect(type.syntax.length, key).toBeGreaterThan(3);
      expect(type.parse(type.kind === 'list' ? def : type.format(def)), key).toEqual(def);
    }
  });
  it('numbers say their unit', () => {
    for (const key of CONFIG_KEYS) {
      if (typeof CONFIG_SCHEMA[key].default === 'number') expect(configField(key).type.unit, key).toBeTruthy();
    }
  });
  it('keeps the flag and config names users already type, each unique', () => {
    const flags = CONFIG_KEYS.map(flagName);
    expect(new Set(flags).size).toBe(flags.length);
    expect(flags).toEqual(
      expect.arrayContaining(['data', 'nbd', 'nbd-socket', 'http', 'export', 'demo', 'fuse', 'nfs', 'portmap', 'nfs-client', 'nfs-read-only']),
    );
    expect(flags).toEqual(expect.arrayContaining(['max-inflight', 'shutdown-timeout', 'log-level', 'log-format', 'cache-size', 'chunk-size']));
    expect(envName('dataDir')).toBe('REBOUND_DATA');
    expect(envName('cacheSize')).toBe('REBOUND_CACHE_SIZE');
    expect(envName('nbd')).toBeUndefined();
  });
  it('takes defaults, and settings from the environment', () => {
    expect(defaultConfig({}).dataDir).toBe('./rebound-data');
    expect(defaultConfig({}).cacheSize).toBe(256 * 1024 ** 2);
    expect(defaultConfig({ REBOUND_DATA: '/x' }).dataDir).toBe('/x');
    expect(defaultConfig({ REBOUND_CACHE_SIZE: '1G', REBOUND_NFS_READ_ONLY: 'true', REBOUND_DATA: '' })).toMatchObject({
      cacheSize: GiB,
      nfsReadOnly: true,
      dataDir: './rebound-data',
    });
  });
  it('hands out fresh default lists', () => {
    defaultConfig({}).nbd.push('changed:1');
    expect(defaultConfig({}).nbd).toEqual(['127.0.0.1:10809']);
  });
  it('validates and resolves', () => {
    const c = validateConfig({ ...defaultConfig({}), exports: ['a=memory:1M'], fuse: 'mnt' }, '/srv');
    expect(c.dataDir).toBe('/srv/rebound-data');
    expect(c.fuse).toBe('/srv/mnt');
    expect(c.exportSpecs[0]!.name).toBe('a');
    expect(validateConfig({}, '/srv').fuse).toBe('off');
  });
  it('reads sizes and rates with suffixes, or as whole numbers', () => {
    const c = validateConfig({ cacheSize: '64M', chunkSize: '4K', sessionWarnSize: '1.5G', qosBandwidth: '100M', qosIops: '500' });
    expect(c).toMatchObject({ cacheSize: 64 * 1024 ** 2, chunkSize: 4096, sessionWarnSize: 1.5 * GiB, qosBandwidth: 100 * 1024 ** 2, qosIops: 500 });
    expect(validateConfig({ cacheSize: 1 << 20 }).cacheSize).toBe(1 << 20);
  });
  it.each([
    [{ nbd: ['nowhere'] }, /invalid address/],
    [{ http: 'x:y' }, /invalid port/],
    [{ nbdMaxInflight: 0 }, /nbdMaxInflight/],
    [{ logLevel: 'loud' }, /logLevel/],
    [{ exports: ['a=memory:1M', 'a=memory:2M'] }, /given twice/],
    [{ cacheSize: '12Q' }, /invalid setting cacheSize: invalid size '12Q'/],
    [{ cacheSize: 0 }, /cacheSize: expected at least 1/],
    [{ qosIops: '1K' }, /qosIops: expected a whole number/],
    [{ nbd: '127.0.0.1:1' }, /nbd: expected a list/],
    [{ nfsClients: ['10.0.0.0/33'] }, /nfsClients: invalid NFS client '10.0.0.0\/33'/],
    [{ nfsClients: ['fd00::/129'] }, /nfsClients/],
    [{ nfsClients: ['esxi01'] }, /nfsClients/],
  ])('rejects %j', (patch, msg) => {
    expect(() => validateConfig({ ...defaultConfig({}), ...(patch as object) })).toThrow(msg);
  });
  it('keeps the error code of the value parser', () => {
    expect(() => validateConfig({ cacheSize: 'lots' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_SIZE' }));
    expect(() => validateConfig({ nbd: ['x'] })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ADDRESS' }));
    expect(() => validateConfig({ demo: 'yes' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
  });
  it('accepts NFS clients: addresses, subnets, all', () => {
    expect(validateConfig({ nfsClients: ['10.0.0.0/8', '192.0.2.1', 'fd00::/64', '*'] }).nfsClients).toHaveLength(4);
  });
  it("turns 'none' into no listener", () => {
    expect(validateConfig({ nbd: ['none'], nfs: ['none'] })).toMatchObject({ nbd: [], nfs: [] });
  });
  it('merges layers: later ones win, exports add up, errors name the source', () => {
    const c = mergeConfig([
      { values: { nbd: ['127.0.0.1:1'], exports: ['a=memory:1M'], cacheSize: '1M' } },
      { values: { nbd: ['127.0.0.1:2'], exports: ['b=memory:1M'] } },
    ]);
    expect(c).toMatchObject({ nbd: ['127.0.0.1:2'], exports: ['a=memory:1M', 'b=memory:1M'], cacheSize: 1 << 20 });
    expect(() => mergeConfig([{ values: { cacheSize: 'x' }, origin: () => '--cache-size' }])).toThrow(/invalid setting cacheSize \(--cache-size\)/);
  });
  it('reads config.json and rejects unknown keys and bad JSON', () => {
    const dir = tempDir();
    expect(readConfigFile(dir)).toEqual({});
    fs.writeFileSync(path.join(dir, 'config.json'), '{"nbd": ["127.0.0.1:1"]}');
    expect(readConfigFile(dir)).toEqual({ nbd: ['127.0.0.1:1'] });
    fs.writeFileSync(path.join(dir, 'config.json'), '{"nbdd": 1}');
    expect(() => readConfigFile(dir)).toThrow(/unknown setting 'nbdd'/);
    fs.writeFileSync(path.join(dir, 'config.json'), '{');
    expect(() => readConfigFile(dir)).toThrow(/not valid JSON/);
    fs.rmSync(dir, { recursive: true });
  });
  it('loads defaults < config.json < environment < flags, with the data directory from flags or environment', () => {
    const dir = tempDir();
    const data = path.join(dir, 'data');
    fs.mkdirSync(data);
    const file = path.join(data, 'config.json');
    fs.writeFileSync(file, JSON.stringify({ dataDir: '/elsewhere', cacheSize: '64M', chunkSize: '256K', http: 'off', exports: ['a=memory:1M'] }));
    const env = { REBOUND_DATA: data, REBOUND_CHUNK_SIZE: '512K' };
    const c = loadConfig({ values: { http: '127.0.0.1:0', exports: ['b=memory:1M'] } }, env, dir);
    expect(c).toMatchObject({ dataDir: data, cacheSize: 64 << 20, chunkSize: 512 << 10, http: '127.0.0.1:0', exports: ['a=memory:1M', 'b=memory:1M'] });
    fs.writeFileSync(file, '{"qosBandwidth": "fast"}');
    expect(() => loadConfig({ values: {} }, env, dir)).toThrow(`invalid setting qosBandwidth (${file})`);
    fs.rmSync(dir, { recursive: true });
  });
  it('prints the settings alone, in schema order', () => {
    const plain = plainConfig(validateConfig({ exports: ['a=memory:1M'] }));
    expect(Object.keys(plain)).toEqual(CONFIG_KEYS);
  });
});
