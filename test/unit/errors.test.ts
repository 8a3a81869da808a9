/** Keeps the error registry and docs/errors.md in step (like fastify's errors test). */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BLOCK_ERROR_CODES, BlockError, ERROR_CODES, ReboundError } from '../../src/errors.js';
import { toNbdError } from '../../src/nbd/error-map.js';
import { toApiError } from '../../src/api/error-map.js';
import { NbdErrno } from '../../src/nbd/protocol.js';

const doc = fs.readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

describe('error registry', () => {
  it('documents every domain code with its HTTP status', () => {
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      expect(doc).toContain(`| \`${code}\` | ${spec.status} |`);
    }
  });
  it('documents every block error code, and nothing that does not exist', () => {
    for (const code of BLOCK_ERROR_CODES) expect(doc).toContain(`| \`${code}\` |`);
    const documented = [...doc.matchAll(/\| `(ERR_[A-Z_]+)` \|/g)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });
  it('every code has a status and a summary', () => {
    for (const spec of Object.values(ERROR_CODES)) {
      expect(spec.status).toBeGreaterThanOrEqual(400);
      expect(spec.summary.length).toBeGreaterThan(10);
    }
  });
});

describe('front-end error mappers', () => {
  it('NBD: every block code maps to a spec error value; EROFS becomes EPERM; anything else EIO', () => {
    const allowed = new Set<number>(Object.values(NbdErrno));
    for (const code of BLOCK_ERROR_CODES) expect(allowed.has(toNbdError(new BlockError(code, 'x')).errno)).toBe(true);
    expect(toNbdError(new BlockError('EROFS', 'x')).errno).toBe(NbdErrno.EPERM);
    expect(toNbdError(new Error('bug')).errno).toBe(NbdErrno.EIO);
  });
  it('HTTP: domain errors keep their code and status; unknown errors are 500 ERR_INTERNAL', () => {
    const e = toApiError(new ReboundError('ERR_EXPORT_NOT_FOUND', 'no export named x'));
    expect(e.status).toBe(404);
    expect(e.body.error).toEqual({ code: 'ERR_EXPORT_NOT_FOUND', message: 'no export named x' });
    expect(toApiError(new Error('bug')).status).toBe(500);
    expect(toApiError(new BlockError('ENOSPC', 'full')).status).toBe(507);
  });
});
