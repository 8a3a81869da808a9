/**
 * An in-process NBD server with its own registry, listening on 127.0.0.1:0 and on a Unix socket in
 * a temp dir, for tests that drive it with real clients or raw frames.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BlockDevice } from '../../src/blockdev/types.js';
import { ExportRegistry } from '../../src/exports/registry.js';
import { NbdServer } from '../../src/nbd/server.js';
import { createLogger, silentLogger, type Logger } from '../../src/util/log.js';
import { tempDir } from './images.js';

export interface FixtureExport {
  name: string;
  device: BlockDevice;
  description?: string;
}

export interface NbdFixture {
  registry: ExportRegistry;
  server: NbdServer;
  port: number;
  socket: string;
  dir: string;
  /** nbd://127.0.0.1:PORT/NAME */
  uri(name: string): string;
  /** nbd+unix:///NAME?socket=PATH */
  unixUri(name: string): string;
  close(): Promise<void>;
}

export async function startNbd(exports: FixtureExport[], opts: { maxInflight?: number; log?: Logger } = {}): Promise<NbdFixture> {
  const log = opts.log ?? (process.env.REBOUND_TEST_LOG ? createLogger({ level: 'debug' }) : silentLogger);
  const registry = new ExportRegistry(log);
  for (const e of exports) registry.add(e);
  const server = new NbdServer({ exports: registry, log, maxInflight: opts.maxInflight });
  const dir = tempDir('rebound-nbd-');
  const socket = path.join(dir, 'nbd.sock');
  const tcp = await server.listenTcp('127.0.0.1', 0);
  await server.listenUnix(socket);
  const port = tcp.kind === 'tcp' ? tcp.port : 0;
  return {
    registry,
    server,
    port,
    socket,
    dir,
    uri: (name) => `nbd://127.0.0.1:${port}/${name}`,
    unixUri: (name) => `nbd+unix:///${name}?socket=${socket}`,
    close: async () => {
      await server.close(2000);
      await registry.closeAll();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
