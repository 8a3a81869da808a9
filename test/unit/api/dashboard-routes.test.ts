/** The dashboard's static routes: open, from memory, only the built names, with the page's security headers. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { installAuth } from '../../../src/api/auth.js';
import { DASHBOARD_CSP, registerDashboardRoutes } from '../../../src/api/dashboard-routes.js';
import { TokenStore } from '../../../src/auth/token-store.js';
import { silentLogger } from '../../../src/util/log.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-dash-'));
fs.mkdirSync(path.join(dir, 'assets'));
fs.writeFileSync(path.join(dir, 'index.html'), '<!doctype html><script type="module" src="/assets/app-1.js"></script>');
fs.writeFileSync(path.join(dir, 'assets', 'app-1.js'), 'console.log(1)');
fs.writeFileSync(path.join(dir, 'assets', 'notes.txt'), 'not served');
fs.writeFileSync(path.join(dir, 'secret.js'), 'outside assets');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function appWith(d: string) {
  const app = Fastify();
  installAuth(app, { tokens: TokenStore.inMemory() }, silentLogger);
  registerDashboardRoutes(app, { dir: d });
  await app.ready();
  return app;
}

describe('dashboard routes', () => {
  it('serve the page and its assets without a token, with CSP and no framing', async () => {
    const app = await appWith(dir);
    const page = await app.inject({ method: 'GET', url: '/' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toBe(DASHBOARD_CSP);
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect(page.headers['cache-control']).toBe('no-cache');
    expect(page.body).toContain('/assets/app-1.js');
    const js = await app.inject({ method: 'GET', url: '/assets/app-1.js' });
    expect(js.statusCode).toBe(200);
    expect(js.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(js.headers['cache-control']).toContain('immutable');
    expect(js.body).toBe('console.log(1)');
    for (const url of ['/assets/notes.txt', '/assets/..%2Fsecret.js', '/assets/nope.js', '/secret.js']) {
      expect((await app.inject({ method: 'GET', url })).statusCode, url).toBe(404);
    }
    await app.close();
  });

  it('without a build, / says how to build it', async () => {
    const app = await appWith(path.join(dir, 'missing'));
    const r = await app.inject({ method: 'GET', url: '/' });
    expect(r.statusCode).toBe(404);
    expect(r.body).toContain('npm run build');
    await app.close();
  });
});
