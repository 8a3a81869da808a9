/** The role table, VM patterns, and the failed-login limits (on a counted clock). */
import { describe, expect, it } from 'vitest';
import { PERMISSIONS, ROLES, leastRoleFor, roleAllows, vmAllowed, vmMatches } from '../../../src/auth/permissions.js';
import { LoginLimiter } from '../../../src/auth/login-limiter.js';

describe('roles', () => {
  it('grant: viewer reads, operator operates, admin administers; each role has what the one below has', () => {
    const table = Object.fromEntries(ROLES.map((r) => [r, PERMISSIONS.filter((p) => roleAllows(r, p))]));
    expect(table).toEqual({
      viewer: ['open', 'read'],
      operator: ['open', 'read', 'operate'],
      admin: ['open', 'read', 'operate', 'admin'],
    });
    expect(leastRoleFor('operate')).toBe('operator');
    expect(leastRoleFor('admin')).toBe('admin');
  });
});

describe('VM patterns', () => {
  it('are globs with * and ?, matched whole; no pattern means every VM', () => {
    expect(vmMatches('web-*', 'web-1')).toBe(true);
    expect(vmMatches('web-*', 'web-')).toBe(true);
    expect(vmMatches('web-*', 'xweb-1')).toBe(false);
    expect(vmMatches('db?', 'db1')).toBe(true);
    expect(vmMatches('db?', 'db12')).toBe(false);
    expect(vmMatches('a.b', 'aXb')).toBe(false);
    expect(vmMatches('a+b', 'a+b')).toBe(true);
    expect(vmAllowed(undefined, 'anything')).toBe(true);
    expect(vmAllowed([], 'anything')).toBe(true);
    expect(vmAllowed(['web-*', 'db1'], 'db1')).toBe(true);
    expect(vmAllowed(['web-*', 'db1'], 'db2')).toBe(false);
  });
});

describe('LoginLimiter', () => {
  it('blocks an address after `limit` failures until its window ends; other addresses are not affected', () => {
    let now = 1_000_000;
    const l = new LoginLimiter({ limit: 3, windowMs: 60_000, now: () => now });
    for (let i = 1; i <= 3; i++) {
      expect(l.blockedFor('10.0.0.1')).toBe(0);
      expect(l.fail('10.0.0.1')).toBe(i);
    }
    expect(l.blockedFor('10.0.0.1')).toBe(60_000);
    expect(l.blockedFor('10.0.0.2')).toBe(0);
    now += 59_999;
    expect(l.blockedFor('10.0.0.1')).toBe(1);
    now += 1;
    expect(l.blockedFor('10.0.0.1')).toBe(0);
    expect(l.fail('10.0.0.1')).toBe(1);
  });

  it('remembers a bounded number of addresses', () => {
    let now = 0;
    const l = new LoginLimiter({ limit: 1, maxAddresses: 100, now: () => now });
    for (let i = 0; i < 1000; i++) {
      l.fail(`a${i}`);
      now++;
    }
    expect(l.addresses).toBeLessThanOrEqual(100);
    expect(l.blockedFor('a999')).toBeGreaterThan(0);
  });
});
