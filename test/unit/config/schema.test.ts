import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_FIELDS, defaultConfig, readConfigFile, validateConfig } from '../../../src/config/schema.js';
import { tempDir } from '../../helpers/images.js';

describe('config schema', () => {
  it('documents every field of the config', () => {
    expect(CONFIG_FIELDS.map((f) => f.key).sort()).toEqual(Object.keys(defaultConfig({})).sort());
    for (const f of CONFIG_FIELDS) expect(f.doc.length).toBeGreaterThan(5);
  });
  it('takes the data directory from REBOUND_DATA', () => {
    expect(defaultConfig({ REBOUND_DATA: '/x' }).dataDir).toBe('/x');
    expect(defaultConfig({}).dataDir).toBe('./rebound-data');
  });
  it('validates and resolves', () => {
    const c = validateConfig({ ...defaultConfig({}), exports: ['a=memory:1M'] }, '/srv');
    expect(c.dataDir).toBe('/srv/rebound-data');
    expect(c.exportSpecs[0]!.name).toBe('a');
  });
  it.each([
    [{ nbd: ['nowhere'] }, /invalid address/],
    [{ http: 'x:y' }, /invalid port/],
    [{ nbdMaxInflight: 0 }, /nbdMaxInflight/],
    [{ logLevel: 'loud' }, /logLevel/],
    [{ exports: ['a=memory:1M', 'a=memory:2M'] }, /given twice/],
  ])('rejects %j', (patch, msg) => {
    expect(() => validateConfig({ ...defaultConfig({}), ...(patch as object) })).toThrow(msg);
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
});
