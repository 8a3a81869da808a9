/**
 * An in-process NBD server over its own publication catalog, listening on 127.0.0.1:0 and on a Unix
 * socket in a temp dir, for tests that drive it with real clients or raw frames. Fixture exports
 * are ad-hoc entries published on NBD with their device already open (the catalog closes them).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BlockDevice } from '../../src/blockdev/types.js';
import { Catalog, type CatalogEntry } from '../../src/exports/catalog.js';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { NbdServer, type NbdServerOptions } from '../../src/nbd/server.js';
import { createLogger, silentLogger, type Logger } from '../../src/util/log.js';
import { tempDir } from './images.js';

export interface FixtureExport {
  name: string;
  device: BlockDevice;
  description?: string;
}

export interface NbdFixture {
  catalog: Catalog;
  server: NbdServer;
  port: number;
  socket: string;
  dir: string;
  /** Publishes one more fixture export (ad-hoc, on NBD); `catalog.revoke(name)` takes it away. */
  publish(e: FixtureExport): CatalogEntry;
  /** nbd://127.0.0.1:PORT/NAME */
  uri(name: string): string;
  /** nbd+unix:///NAME?socket=PATH */
  unixUri(name: string): string;
  close(): Promise<void>;
}

export function publishFixture(catalog: Catalog, e: FixtureExport): CatalogEntry {
  return catalog.publish({
    name: e.name,
    kind: 'adhoc',
    disk: e.name,
    size: e.device.size,
    capabilities: e.device.capabilities(),
    publish: ['nbd'],
    description: e.description,
    source: e.device.name,
    device: e.device,
  });
}

/** `opts`: any server option (limits, log limiter, budget); `log` also goes to the catalog. */
export async function startNbd(exports: FixtureExport[], opts: Omit<NbdServerOptions, 'exports'> = {}): Promise<NbdFixture> {
  const log = opts.log ?? (process.env.REBOUND_TEST_LOG ? createLogger({ level: 'debug' }) : silentLogger);
  const catalog = new Catalog(log);
  for (const e of exports) publishFixture(catalog, e);
  const server = new NbdServer({ ...opts, exports: catalog.view('nbd'), log });
  const dir = tempDir('rebound-nbd-');
  const socket = path.join(dir, 'nbd.sock');
  const tcp = await server.listenTcp('127.0.0.1', 0);
  await server.listenUnix(socket);
  const port = tcp.kind === 'tcp' ? tcp.port : 0;
  return {
    catalog,
    server,
    port,
    socket,
    dir,
    publish: (e) => publishFixture(catalog, e),
    uri: (name) => `nbd://127.0.0.1:${port}/${name}`,
    unixUri: (name) => `nbd+unix:///${name}?socket=${socket}`,
    close: async () => {
      await server.close(2000);
      await catalog.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A memory disk whose reads below `gatedBelow` wait until open() (a slow repository read), counting
 * the reads that started: while the gate is shut no reply reaches the socket.
 */
export class GatedDisk extends MemoryDevice {
  started = 0;
  readonly #gate: Promise<void>;
  readonly #gatedBelow: number;
  open!: () => void;

  constructor(size: number, gatedBelow = 32 * 1024 * 1024) {
    super(size);
    this.#gatedBelow = gatedBelow;
    this.#gate = new Promise((r) => (this.open = r));
  }

  override async read(dst: Uint8Array, offset: number): Promise<void> {
    if (offset < this.#gatedBelow) {
      this.started++;
      await this.#gate;
    }
    return super.read(dst, offset);
  }
}
