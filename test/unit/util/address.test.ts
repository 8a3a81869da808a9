import { describe, expect, it } from 'vitest';
import { formatTcpAddress, parseTcpAddress } from '../../../src/util/address.js';

describe('parseTcpAddress', () => {
  it('parses HOST:PORT, [IPv6]:PORT and a bare PORT', () => {
    expect(parseTcpAddress('0.0.0.0:10809')).toEqual({ host: '0.0.0.0', port: 10809 });
    expect(parseTcpAddress('localhost:0')).toEqual({ host: 'localhost', port: 0 });
    expect(parseTcpAddress('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(parseTcpAddress('8080')).toEqual({ host: '127.0.0.1', port: 8080 });
  });
  it.each(['', 'host', 'host:', ':80', 'host:99999', 'a:b:c', 'host:8x'])('rejects %j', (t) => {
    expect(() => parseTcpAddress(t)).toThrow(/invalid/);
  });
  it('formats IPv6 in brackets', () => {
    expect(formatTcpAddress({ host: '::1', port: 1 })).toBe('[::1]:1');
    expect(formatTcpAddress({ host: '127.0.0.1', port: 1 })).toBe('127.0.0.1:1');
  });
});
