import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { latestResults, listResults, resultsDir, saveResult, screenshotPath, type BootVerification } from '../../../src/verify/result.js';
import { tempDir } from '../../helpers/images.js';

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

const result = (over: Partial<BootVerification>): BootVerification =>
  ({ format: 'rebound-boot-verification', version: 1, id: 'a', vm: 'web', point: 'p1', startedAt: '2026-12-06T01:00:00.000Z', ok: true, screenshot: null, ...over }) as BootVerification;

describe('stored verification results', () => {
  it('keeps results per point, newest last, with the screenshot beside them', async () => {
    const data = tempDir('rebound-results-');
    dirs.push(data);
    await saveResult(data, result({ id: 'b', startedAt: '2026-12-06T02:00:00.000Z', ok: false, screenshot: 'b.png' }), Buffer.from('png'));
    await saveResult(data, result({ id: 'a' }), null);
    await saveResult(data, result({ id: 'c', point: 'p2' }), null);
    fs.writeFileSync(path.join(resultsDir(data), 'web', 'p1', 'zz.json'), '{ damaged');
    const p1 = await listResults(data, 'web', 'p1');
    expect(p1.map((r) => r.id)).toEqual(['a', 'b']);
    expect(fs.readFileSync(screenshotPath(data, p1[1]!)!, 'utf8')).toBe('png');
    expect(screenshotPath(data, p1[0]!)).toBeNull();
    expect(Object.fromEntries(Object.entries(await latestResults(data, 'web')).map(([k, r]) => [k, r.id]))).toEqual({ p1: 'b', p2: 'c' });
  });

  it('never reads outside the results directory for a name of . or ..', async () => {
    const data = tempDir('rebound-results-');
    dirs.push(data);
    await saveResult(data, result({ id: 'a' }), null);
    expect(await latestResults(data, '..')).toEqual({});
    expect(await listResults(data, '..', '..')).toEqual([]);
    expect(await listResults(data, '.', 'web')).toEqual([]);
  });
});
