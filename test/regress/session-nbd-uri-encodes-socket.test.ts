/**
 * Regression: the sessions report built its NBD URIs on its own and did not encode the socket path,
 * so `rebound sessions` printed a URI that a client could not use when the daemon's Unix socket
 * path held a character with a meaning in URIs (space, '#', '%', '&'): `?socket=/run/a #1/nbd.sock`
 * names the socket '/run/a ' to every URI parser. Fixed in 95c1b43 ("nbdUris in one place ...; the
 * sessions report no longer formats URIs its own way"). Driven through the daemon process and CLI
 * on a copy of the session-v1 fixture; the URIs the report gives are used with nbdinfo.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { tempDir } from '../helpers/images.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';

const FIXTURE = path.join(import.meta.dirname, '../fixtures/session-v1');
const missing = missingPeers('nbdinfo');

/** Every string in a JSON value that looks like an NBD-over-Unix-socket URI. */
function unixUris(v: unknown): string[] {
  if (typeof v === 'string') return v.startsWith('nbd+unix:') ? [v] : [];
  if (Array.isArray(v)) return v.flatMap(unixUris);
  if (v && typeof v === 'object') return Object.values(v).flatMap(unixUris);
  return [];
}

describe.skipIf(missing.length > 0)('session NBD URIs with an unusual socket path', () => {
  let dir: string;
  let socket: string;
  let daemon: DaemonProcess | undefined;

  beforeAll(async () => {
    dir = tempDir('rebound-regress-uri-');
    fs.cpSync(path.join(FIXTURE, 'data'), path.join(dir, 'data'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'a #1%&'));
    socket = path.join(dir, 'a #1%&', 'nbd.sock');
    daemon = await startDaemonProcess(['--data', path.join(dir, 'data'), '--nbd', 'none', '--nbd-socket', socket, '--http', '127.0.0.1:0']);
  });
  afterAll(async () => {
    await daemon?.stop('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reports URIs that name the real socket and export, and work with nbdinfo', async () => {
    const out = await runOk(process.execPath, [CLI, '--server', `http://${daemon!.http}`, '--token-file', daemon!.tokenFile, 'sessions', '--json']);
    const uris = unixUris(JSON.parse(out.stdout));
    expect(uris.length).toBeGreaterThanOrEqual(2);
    const sizes: Record<string, number> = { disk0: 69632, disk1: 32768 };
    for (const disk of Object.keys(sizes)) {
      const uri = uris.find((u) => new URL(u).pathname.endsWith(`/${disk}`));
      expect(uri, `a URI for ${disk} in ${uris.join(' ')}`).toBeDefined();
      const u = new URL(uri!);
      expect(u.searchParams.get('socket')).toBe(socket);
      expect(decodeURIComponent(u.pathname)).toBe(`/session/web01/${disk}`);
      expect(u.hash).toBe('');
      const info = await runOk('nbdinfo', ['--size', uri!], { timeoutMs: 30_000 });
      expect(Number(info.stdout.trim())).toBe(sizes[disk]);
    }
  });
});
