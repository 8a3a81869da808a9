/** The NFS settings of the daemon's configuration and of `rebound serve`. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultConfig, validateConfig } from '../../../src/config/schema.js';
import { cli } from '../../helpers/cli.js';
import { tempDir } from '../../helpers/images.js';

describe('NFS configuration', () => {
  it('is off by default, with the portmapper on 111 once NFS is on', () => {
    const c = defaultConfig({});
    expect(c).toMatchObject({ nfs: [], portmap: '111', nfsClients: [], nfsReadOnly: false });
  });

  it('validates addresses, the portmapper and client lists, naming the field', () => {
    const base = { ...defaultConfig({}), dataDir: '/tmp/x' };
    expect(validateConfig({ ...base, nfs: ['0.0.0.0:2049'], portmap: 'off', nfsClients: ['10.0.0.0/8', '192.0.2.1', '*'] })).toMatchObject({ nfs: ['0.0.0.0:2049'] });
    expect(() => validateConfig({ ...base, nfs: ['nope'] })).toThrow(/invalid address/);
    expect(() => validateConfig({ ...base, portmap: 'x:y' })).toThrow(/invalid/);
    expect(() => validateConfig({ ...base, nfsClients: ['esxi01'] })).toThrow(/nfsClients/);
    expect(() => validateConfig({ ...base, nfsReadOnly: 'yes' as unknown as boolean })).toThrow(/nfsReadOnly/);
  });

  it('rebound serve takes --nfs, --portmap, --nfs-client and --nfs-read-only', async () => {
    const dir = tempDir('rebound-nfs-cfg-');
    const r = await cli(['serve', '--data', path.join(dir, 'd'), '--nfs', '127.0.0.1:2049', '--nfs', '[::1]:2049', '--portmap', 'off', '--nfs-client', '10.0.0.0/8', '--nfs-read-only', '--print-config']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ nfs: ['127.0.0.1:2049', '[::1]:2049'], portmap: 'off', nfsClients: ['10.0.0.0/8'], nfsReadOnly: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
