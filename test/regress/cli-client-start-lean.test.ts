/**
 * Regression: every CLI command loaded the whole daemon (fastify, level, prom-client, pngjs, the
 * AWS SDK, every front end) because `serve` imported it statically; `rebound --help` took 0.5-1 s
 * and `rebound verify --boot` paid it on every verification (tools/bench/verify). The daemon now
 * loads inside `serve`'s action. A loader hook records every module the client commands load.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { CLI } from '../helpers/daemon-process.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-cli-lean-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The module URLs `node dist/cli/main.js ARGS` loads (through module.register's resolve hook). */
function loadedModules(args: string[]): string[] {
  const log = path.join(dir, `loaded-${args.join('-')}.txt`);
  const hooks = path.join(dir, 'hooks.mjs');
  fs.writeFileSync(hooks, `import fs from 'node:fs';\nexport async function resolve(s, c, next) { const r = await next(s, c); fs.appendFileSync(${JSON.stringify(log)}, r.url + '\\n'); return r; }\n`);
  const register = path.join(dir, 'register.mjs');
  fs.writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify('file://' + hooks)});\n`);
  execFileSync(process.execPath, ['--import', register, CLI, ...args], { stdio: 'ignore' });
  return fs.readFileSync(log, 'utf8').split('\n').filter(Boolean);
}

it.each(['--help', 'verify --help', 'sessions --help'])('rebound %s loads neither the daemon nor its libraries', (command) => {
  const loaded = loadedModules(command.split(' '));
  expect(loaded.some((u) => u.endsWith('/dist/cli/main.js'))).toBe(true);
  const heavy = loaded.filter((u) => /\/node_modules\/(fastify|classic-level|prom-client|pngjs|@aws-sdk|@smithy)\/|\/dist\/(daemon\/daemon|api\/server|nfs\/server|iscsi\/target)\.js$/.test(u));
  expect(heavy).toEqual([]);
});
