/** Access rules per TLS identity (tls/access.ts). */
import { describe, expect, it } from 'vitest';
import { ReboundError } from '../../../src/errors.js';
import { AccessPolicy, accessRuleType, globMatch, identityMatches, parseAccessRule, type AccessSubject, type TlsIdentity } from '../../../src/tls/access.js';

const alice: TlsIdentity = { kind: 'x509', name: 'CN=alice,O=Example', cn: 'alice' };
const bobPsk: TlsIdentity = { kind: 'psk', name: 'bob' };
const point: AccessSubject = { name: 'vm1@20260101T000000Z/disk0', point: { vm: 'vm1' } };
const session: AccessSubject = { name: 'session/s1/disk0', session: { vm: 'vm2', name: 's1' } };
const allowed: AccessSubject = { name: 'session/s2/disk0', session: { vm: 'vm3', name: 's2' }, allow: ['bob'] };

describe('parseAccessRule', () => {
  it('reads IDENTITY:PATTERNS[:ro|:rw] from the right, so DNs may hold ":"', () => {
    expect(parseAccessRule('alice:vm1')).toEqual({ identity: 'alice', exports: ['vm1'], readOnly: false });
    expect(parseAccessRule('CN=alice,O=Example:vm1,session/*:ro')).toEqual({ identity: 'CN=alice,O=Example', exports: ['vm1', 'session/*'], readOnly: true });
    expect(parseAccessRule('CN=a:b:vm*:rw')).toEqual({ identity: 'CN=a:b', exports: ['vm*'], readOnly: false });
    expect(parseAccessRule({ identity: 'bob', exports: ['*'], readOnly: true })).toEqual({ identity: 'bob', exports: ['*'], readOnly: true });
    expect(accessRuleType.parse({ identity: 'bob', exports: 'vm1' })).toBe('bob:vm1');
  });
  it('refuses malformed rules with ERR_INVALID_ARGUMENT', () => {
    for (const bad of ['alice', ':vm1', 'alice:', 'alice:vm1,,vm2', 42, { identity: '', exports: ['x'] }, { identity: 'a', exports: [] }, { identity: 'a', exports: ['x'], extra: 1 }]) {
      expect(() => parseAccessRule(bad), JSON.stringify(bad)).toThrow(ReboundError);
    }
  });
});

describe('matching', () => {
  it('globs match whole names; * and ? only', () => {
    expect(globMatch('vm*', 'vm12')).toBe(true);
    expect(globMatch('vm?', 'vm12')).toBe(false);
    expect(globMatch('vm1', 'vm12')).toBe(false);
    expect(globMatch('a.b', 'aXb')).toBe(false);
    expect(globMatch('session/*', 'session/s1/disk0')).toBe(true);
  });
  it('a certificate matches its full DN or CN=NAME; a PSK user its name only', () => {
    expect(identityMatches('CN=alice,O=Example', alice)).toBe(true);
    expect(identityMatches('CN=alice', alice)).toBe(true);
    expect(identityMatches('alice', alice)).toBe(false);
    expect(identityMatches('bob', bobPsk)).toBe(true);
    expect(identityMatches('CN=bob', bobPsk)).toBe(false);
  });
});

describe('AccessPolicy', () => {
  const rules = [parseAccessRule('CN=alice:vm1:ro'), parseAccessRule('CN=alice:s1'), parseAccessRule('bob:vm*:ro')];
  const policy = new AccessPolicy({ enabled: true, rules });

  it('disabled (TLS off): everything, as published', () => {
    expect(AccessPolicy.OPEN.decide(undefined, allowed, true)).toEqual({ allowed: true, readOnly: false });
    expect(AccessPolicy.OPEN.decide(alice, point, false)).toEqual({ allowed: true, readOnly: true });
  });
  it('rules admit by VM, session or export name; read-only rules make the export read-only', () => {
    expect(policy.decide(alice, point, true)).toEqual({ allowed: true, readOnly: true });
    expect(policy.decide(alice, session, true)).toEqual({ allowed: true, readOnly: false });
    expect(policy.decide(alice, allowed, true)).toEqual({ allowed: false });
    expect(policy.decide(bobPsk, point, true)).toEqual({ allowed: true, readOnly: true });
    expect(policy.decide(bobPsk, session, true)).toEqual({ allowed: true, readOnly: true }); // vm2 matches vm*
  });
  it("an entry's allow list admits read-write (as far as the disk is writable); the most permissive grant wins", () => {
    expect(policy.decide(bobPsk, allowed, true)).toEqual({ allowed: true, readOnly: false });
    expect(policy.decide(bobPsk, allowed, false)).toEqual({ allowed: true, readOnly: true });
  });
  it('without rules, everything but allow-listed entries is open; anonymous connections get only what nobody restricted', () => {
    expect(policy.decide(undefined, point, true)).toEqual({ allowed: false });
    const noRules = new AccessPolicy({ enabled: true });
    expect(noRules.decide(undefined, point, true)).toEqual({ allowed: true, readOnly: false });
    expect(noRules.decide(alice, point, true)).toEqual({ allowed: true, readOnly: false });
    expect(noRules.decide(undefined, allowed, true)).toEqual({ allowed: false });
    expect(noRules.decide(alice, allowed, true)).toEqual({ allowed: false });
    expect(noRules.decide(bobPsk, allowed, true)).toEqual({ allowed: true, readOnly: false });
  });
});
