/**
 * Who may open which published disk, once a connection has an identity (a verified client
 * certificate or a TLS-PSK username).
 *
 * Design notes:
 *  - An identity is a PSK username (`alice`) or a certificate's subject DN (`CN=alice,O=Example`,
 *    RFC 4514 order: most specific first, as GnuTLS and `openssl x509 -nameopt RFC2253` print it).
 *    A rule or an `allow` entry names an identity by that exact string; for certificates `CN=alice`
 *    alone also matches (the usual case: one CA, CNs unique).
 *  - Two sources grant access: admin rules (`nbdAccess`: identity, export patterns, read-only or
 *    not) and an entry's own `allow` list (a recovery session's `--allow IDENTITY`, read-write as
 *    far as the disk is writable). Several grants: the most permissive wins.
 *  - Patterns are globs (`*` any run of characters, `?` one) matched against the export name, the
 *    VM name and the session name of the entry, so `vm1` admits vm1's restore points and sessions,
 *    `session/*` every session's disks, `*` everything.
 *  - With TLS off (policy disabled) nothing is checked: there are no identities, as before TLS.
 *  - An entry with an `allow` list is restricted: only its identities and rules that name it get
 *    it. Without any rule, every other entry is open to every client that passed TLS (as nbdkit
 *    gives everything to any trusted certificate); once rules exist, an identity gets only what they
 *    (or allow lists) grant. A connection without an identity (plain text in `--tls on`, or TLS
 *    without a client certificate) is admitted only where nothing is configured: no rules at all and
 *    no `allow` on the entry.
 *  - Refused exports are indistinguishable from absent ones (NBD_REP_ERR_UNKNOWN, not in LIST).
 */
import { ReboundError } from '../errors.js';
import type { FieldType } from '../config/field-types.js';

export interface TlsIdentity {
  kind: 'x509' | 'psk';
  /** PSK username, or the certificate subject DN (RFC 4514). */
  name: string;
  /** x509: the subject's common name, when it has one. */
  cn?: string;
}

export interface AccessRule {
  identity: string;
  exports: string[];
  readOnly: boolean;
}

/** What an access check needs of a published disk (CatalogEntry has all of it). */
export interface AccessSubject {
  name: string;
  point?: { vm: string } | undefined;
  session?: { vm: string; name: string } | undefined;
  /** Identities the publisher admitted (recovery session `--allow`). */
  allow?: readonly string[] | undefined;
}

export type AccessDecision = { allowed: false } | { allowed: true; readOnly: boolean };

export function identityText(id: TlsIdentity | undefined): string {
  if (!id) return 'anonymous';
  return id.kind === 'psk' ? `psk:${id.name}` : `x509:${id.name}`;
}

export function identityMatches(pattern: string, id: TlsIdentity): boolean {
  if (pattern === id.name) return true;
  return id.kind === 'x509' && id.cn !== undefined && pattern === `CN=${id.cn}`;
}

/** A tiny glob: `*` any run, `?` one character; everything else literal. */
export function globMatch(pattern: string, text: string): boolean {
  const re = new RegExp(
    '^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$',
    's',
  );
  return re.test(text);
}

const RULE_SYNTAX = "IDENTITY:PATTERN[,PATTERN...][:ro|:rw] (or a JSON object {identity, exports, readOnly})";

/**
 * Parses an `nbdAccess` rule. Text form `IDENTITY:PATTERN[,PATTERN...][:ro|:rw]`, read from the
 * right (a DN may contain ':'; patterns may not contain ':' or ','); or an object.
 */
export function parseAccessRule(value: unknown): AccessRule {
  const bad = (why: string): ReboundError => new ReboundError('ERR_INVALID_ARGUMENT', `invalid access rule ${JSON.stringify(value)}: ${why}; expected ${RULE_SYNTAX}`);
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const o = value as Record<string, unknown>;
    const unknown = Object.keys(o).filter((k) => !['identity', 'exports', 'readOnly'].includes(k));
    if (unknown.length > 0) throw bad(`unknown key ${unknown[0]}`);
    if (typeof o.identity !== 'string' || o.identity.trim() === '') throw bad('identity must be a non-empty string');
    const exports = typeof o.exports === 'string' ? [o.exports] : o.exports;
    if (!Array.isArray(exports) || exports.length === 0 || !exports.every((e) => typeof e === 'string' && e !== '')) {
      throw bad('exports must be a non-empty list of patterns');
    }
    if (o.readOnly !== undefined && typeof o.readOnly !== 'boolean') throw bad('readOnly must be true or false');
    return { identity: o.identity, exports: exports as string[], readOnly: o.readOnly === true };
  }
  if (typeof value !== 'string') throw bad('not a string or an object');
  let rest = value;
  let readOnly = false;
  const mode = /:(ro|rw)$/.exec(rest);
  if (mode) {
    readOnly = mode[1] === 'ro';
    rest = rest.slice(0, -3);
  }
  const colon = rest.lastIndexOf(':');
  if (colon <= 0) throw bad('no IDENTITY:PATTERN');
  const identity = rest.slice(0, colon);
  const exports = rest.slice(colon + 1).split(',');
  if (exports.some((e) => e === '')) throw bad('an empty export pattern');
  return { identity, exports, readOnly };
}

export function formatAccessRule(rule: AccessRule): string {
  return `${rule.identity}:${rule.exports.join(',')}${rule.readOnly ? ':ro' : ''}`;
}

export class AccessPolicy {
  readonly enabled: boolean;
  readonly rules: readonly AccessRule[];

  constructor(opts: { enabled: boolean; rules?: readonly AccessRule[] }) {
    this.enabled = opts.enabled;
    this.rules = opts.rules ?? [];
  }

  /** No checks at all (TLS off). */
  static readonly OPEN = new AccessPolicy({ enabled: false });

  decide(identity: TlsIdentity | undefined, subject: AccessSubject, writable: boolean): AccessDecision {
    if (!this.enabled) return { allowed: true, readOnly: !writable };
    const unconfigured = this.rules.length === 0 && (subject.allow === undefined || subject.allow.length === 0);
    if (unconfigured) return { allowed: true, readOnly: !writable };
    if (!identity) return { allowed: false };
    let allowed = false;
    let readOnly = true;
    if (subject.allow?.some((p) => identityMatches(p, identity))) {
      allowed = true;
      readOnly = false;
    }
    const names = [subject.name, subject.point?.vm, subject.session?.vm, subject.session?.name].filter((n): n is string => !!n);
    for (const rule of this.rules) {
      if (!identityMatches(rule.identity, identity)) continue;
      if (!rule.exports.some((p) => names.some((n) => globMatch(p, n)))) continue;
      allowed = true;
      if (!rule.readOnly) readOnly = false;
    }
    if (!allowed) return { allowed: false };
    return { allowed: true, readOnly: readOnly || !writable };
  }
}

/** The config kind of one `nbdAccess` rule: text or an object in config.json, kept as text. */
export const accessRuleType: FieldType<string> = {
  kind: 'value',
  placeholder: 'RULE',
  syntax: RULE_SYNTAX,
  parse: (value) => formatAccessRule(parseAccessRule(value)),
  format: String,
};
