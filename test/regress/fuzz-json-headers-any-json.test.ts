/**
 * Regress (found by tools/fuzz, target formats): the restore-point manifest and overlay-header
 * decoders threw a TypeError instead of their error code on JSON that is not an object (`null`)
 * and on a `version` that cannot become a string (`{"toString":null}`: the error message
 * interpolated it). Any JSON in those files must give ERR_REPO_CORRUPT / ERR_OVERLAY_* .
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readHeader } from '../../src/blockdev/layers/cow/format.js';
import { parseManifest } from '../../src/repo/manifest.js';

const TEXTS = ['null', '1', '"x"', '[]', '{"format":"rebound-point","version":{"toString":null}}', '{"format":"rebound-cow-overlay","version":{"toString":null}}', '{"format":"rebound-cow-overlay","version":[{"valueOf":1}]}'];

describe('regress: decoders of JSON files and any JSON', () => {
  it('parseManifest answers ERR_REPO_CORRUPT', () => {
    for (const t of TEXTS) expect(() => parseManifest(t, 'point.json'), t).toThrow(expect.objectContaining({ code: 'ERR_REPO_CORRUPT' }));
  });
  it('readHeader answers ERR_OVERLAY_CORRUPT or ERR_OVERLAY_VERSION', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-regress-header-'));
    try {
      for (const t of TEXTS) {
        fs.writeFileSync(path.join(dir, 'overlay.json'), t);
        const err = await readHeader(dir).then(() => undefined, (e: unknown) => e);
        expect((err as { code?: string })?.code, t).toMatch(/^ERR_OVERLAY_(CORRUPT|VERSION)$/);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
