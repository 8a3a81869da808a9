import { describe, expect, it } from 'vitest';
import { parseExportSpec } from '../../../src/config/export-spec.js';

describe('parseExportSpec', () => {
  it('parses a file export, resolving relative paths against cwd', () => {
    expect(parseExportSpec('vm1=images/vm1.raw', '/srv')).toMatchObject({ name: 'vm1', source: { kind: 'file', path: '/srv/images/vm1.raw' } });
    expect(parseExportSpec('vm1=/abs.img').source).toEqual({ kind: 'file', path: '/abs.img' });
  });
  it('parses memory exports with a size', () => {
    expect(parseExportSpec('scratch=memory:64M').source).toEqual({ kind: 'memory', size: 64 * 1024 * 1024 });
  });
  it('takes desc= as the last option, commas included', () => {
    const s = parseExportSpec('a=/x.img,desc=web server, last night');
    expect(s.description).toBe('web server, last night');
    expect(s.source).toEqual({ kind: 'file', path: '/x.img' });
  });
  it.each([
    ['noequals', /NAME=SOURCE/],
    ['=x.img', /NAME=SOURCE/],
    ['a=', /missing SOURCE/],
    ['a=memory:lots', /invalid size/],
    ['a=/x.img,bogus', /unknown option 'bogus'/],
  ])('rejects %j with a clear message', (text, msg) => {
    expect(() => parseExportSpec(text)).toThrow(msg);
  });
});
