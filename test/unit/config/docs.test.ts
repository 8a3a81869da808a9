/** docs/config.md is rendered from the schema; this keeps the committed file equal to the rendering. */
import { describe, expect, it } from 'vitest';
import { CONFIG_EXAMPLE, renderConfigDoc } from '../../../src/config/docs.js';
import { CONFIG_KEYS, envName, validateConfig } from '../../../src/config/schema.js';

describe('docs/config.md', () => {
  it('is the rendering of the schema (after a schema change: vitest run test/unit/config/docs.test.ts -u)', async () => {
    await expect(renderConfigDoc()).toMatchFileSnapshot('../../../docs/config.md');
  });
  it('documents every setting with its environment variable', () => {
    const doc = renderConfigDoc();
    for (const key of CONFIG_KEYS) {
      expect(doc).toContain(`## ${key}\n`);
      const env = envName(key);
      if (env) expect(doc).toContain(env);
    }
  });
  it('shows a config.json example that is valid', () => {
    expect(() => validateConfig(CONFIG_EXAMPLE, '/srv')).not.toThrow();
  });
});
