/**
 * Regress (found by tools/fuzz, target api): a malformed percent-encoding in the URL
 * (`/v1/nope/%`, `/v1/sessions/%E2%82/switch`) was answered with fastify's own 400 body
 * (`{"error":"Bad Request","code":"FST_ERR_BAD_URL",...}`), not the API's error shape.
 */
import { describe, expect, it } from 'vitest';
import { createApi } from '../../src/api/server.js';
import { TokenStore } from '../../src/auth/token-store.js';
import { Catalog } from '../../src/exports/catalog.js';
import { silentLogger } from '../../src/util/log.js';

describe('regress: malformed URLs', () => {
  it('get 400 with the API error shape', async () => {
    const app = createApi({
      catalog: new Catalog(),
      log: silentLogger,
      version: '0.0.0',
      startedAt: new Date(),
      endpoints: () => ({ nbd: [], nbdSocket: [], http: '127.0.0.1:10810' }),
      config: () => ({ http: '127.0.0.1:10810' }),
      auth: { tokens: TokenStore.inMemory() },
    });
    try {
      for (const [method, url] of [['GET', '/v1/nope/%'], ['POST', '/v1/sessions/%E2%82/switch'], ['GET', '/v1/exports/%E2%82']] as const) {
        const r = await app.inject({ method, url, headers: { host: '127.0.0.1:10810' } });
        expect(r.statusCode, url).toBe(400);
        expect(r.json(), url).toMatchObject({ error: { code: 'ERR_INVALID_ARGUMENT', message: expect.stringMatching(/malformed request/) } });
      }
    } finally {
      await app.close();
    }
  });
});
