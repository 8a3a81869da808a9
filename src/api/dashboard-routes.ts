/**
 * The dashboard (src/dashboard, built by `npm run build` into dist/dashboard) served on the API's
 * listener: GET / is its page, GET /assets/NAME its hashed scripts and styles. These routes are
 * `open` (static files; every piece of data comes from the API with the user's token).
 *
 * The files are read once at registration into memory (about 100 KiB) and only names found there
 * are served: no path from a request reaches the file system. Every response forbids framing and
 * carries a Content-Security-Policy that allows scripts, styles and connections to this origin
 * only (the build has no inline script), so the page cannot be made to load or send anything
 * elsewhere. Hashed assets are immutable; the page itself is revalidated.
 * Without a build, GET / answers 404 naming the command that builds it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { ReboundError } from '../errors.js';

/** dist/dashboard of this checkout, from dist/api or src/api alike. */
export const DASHBOARD_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'dashboard');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.json': 'application/json',
};

export const DASHBOARD_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

interface StaticFile {
  body: Buffer;
  type: string;
}

function load(dir: string): { index: StaticFile | undefined; assets: Map<string, StaticFile> } {
  const assets = new Map<string, StaticFile>();
  const read = (p: string): StaticFile | undefined => {
    const type = TYPES[path.extname(p)];
    return type ? { body: fs.readFileSync(p), type } : undefined;
  };
  let index: StaticFile | undefined;
  try {
    index = read(path.join(dir, 'index.html'));
    for (const name of fs.readdirSync(path.join(dir, 'assets'))) {
      const f = read(path.join(dir, 'assets', name));
      if (f) assets.set(name, f);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return { index, assets };
}

export function registerDashboardRoutes(app: FastifyInstance, opts: { dir?: string } = {}): void {
  const { index, assets } = load(opts.dir ?? DASHBOARD_DIR);
  const send = (reply: FastifyReply, f: StaticFile, cache: string): FastifyReply =>
    reply
      .header('content-type', f.type)
      .header('cache-control', cache)
      .header('content-security-policy', DASHBOARD_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('x-frame-options', 'DENY')
      .header('referrer-policy', 'no-referrer')
      .send(f.body);
  const open = { config: { permission: 'open' as const } };

  app.get('/', open, async (_req, reply) => {
    if (!index) throw new ReboundError('ERR_NOT_FOUND', 'the dashboard is not built: run npm run build (or tools/setup.sh)');
    return send(reply, index, 'no-cache');
  });
  app.get<{ Params: { name: string } }>('/assets/:name', open, async (req, reply) => {
    const f = assets.get(req.params.name);
    if (!f) throw new ReboundError('ERR_NOT_FOUND', `no dashboard asset '${req.params.name}'`);
    return send(reply, f, 'public, max-age=31536000, immutable');
  });
}
