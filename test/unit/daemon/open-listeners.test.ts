/** The start-up warnings about listeners reachable from the network without TLS or authentication. */
import { describe, expect, it } from 'vitest';
import { isLoopbackHost, openListenerWarnings } from '../../../src/daemon/open-listeners.js';

const base = { nbd: [], nbdTls: 'off', nfs: [], nfsClients: [], http: undefined, httpTls: false };

describe('openListenerWarnings', () => {
  it('says nothing about loopback listeners (the defaults)', () => {
    expect(openListenerWarnings({ ...base, nbd: ['127.0.0.1:10809', '[::1]:10809'], nfs: ['127.0.0.1:2049'], http: '127.0.0.1:10810' })).toEqual([]);
    expect(['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1'].every(isLoopbackHost)).toBe(true);
    expect(['0.0.0.0', '::', '10.0.0.1', '128.0.0.1'].some(isLoopbackHost)).toBe(false);
  });

  it('warns once per exposed listener: NBD without required TLS, NFS always, HTTP without TLS', () => {
    const w = openListenerWarnings({ ...base, nbd: ['0.0.0.0:10809', '127.0.0.1:10810'], nfs: ['0.0.0.0:2049'], http: '0.0.0.0:10810' });
    expect(w).toHaveLength(3);
    expect(w[0]).toMatch(/^NBD listener 0\.0\.0\.0:10809 .*neither TLS nor authentication.*--tls require/);
    expect(w[1]).toMatch(/^NFS listener 0\.0\.0\.0:2049 .*--nfs-client/);
    expect(w[2]).toMatch(/^HTTP API 0\.0\.0\.0:10810 .*clear text.*--http-tls/);
    expect(openListenerWarnings({ ...base, nbd: ['10.0.0.5:10809'], nbdTls: 'on' })[0]).toMatch(/--tls on lets plain clients in/);
  });

  it('is quiet for NBD with TLS required and HTTP with TLS', () => {
    expect(openListenerWarnings({ ...base, nbd: ['0.0.0.0:10809'], nbdTls: 'require', http: '[::]:10810', httpTls: true })).toEqual([]);
  });
});
