/**
 * Daemon: the composition root of `rebound serve`. It owns the data directory (lock), opens the
 * configured export sources into the ExportRegistry, and runs the front ends (NBD listeners) and
 * the HTTP API. Shutdown order: API and listeners stop accepting, NBD connections drain, devices
 * close, the lock is released.
 */
import type { FastifyInstance } from 'fastify';
import path from 'node:path';
import { RawFileDevice } from '../blockdev/base/raw-file.js';
import { CowOverlay } from '../blockdev/layers/cow/cow-overlay.js';
import { MemoryDevice } from '../blockdev/base/memory.js';
import type { BlockDevice } from '../blockdev/types.js';
import type { ExportSpec } from '../config/export-spec.js';
import type { ValidatedConfig } from '../config/schema.js';
import { createApi } from '../api/server.js';
import { ExportRegistry } from '../exports/registry.js';
import { NbdServer } from '../nbd/server.js';
import { formatTcpAddress, parseTcpAddress } from '../util/address.js';
import type { Logger } from '../util/log.js';
import { VERSION } from '../version.js';
import { DataDirLock } from './data-dir.js';
import { ReboundError } from '../errors.js';

export interface DaemonEndpoints {
  nbd: string[];
  nbdSocket: string[];
  http: string | undefined;
}

export class Daemon {
  readonly config: ValidatedConfig;
  readonly registry: ExportRegistry;
  readonly nbd: NbdServer;
  readonly startedAt = new Date();
  readonly #log: Logger;
  readonly #lock: DataDirLock;
  #api: FastifyInstance | undefined;
  #endpoints: DaemonEndpoints = { nbd: [], nbdSocket: [], http: undefined };
  #closing: Promise<void> | undefined;

  private constructor(config: ValidatedConfig, log: Logger, lock: DataDirLock) {
    this.config = config;
    this.#log = log;
    this.#lock = lock;
    this.registry = new ExportRegistry(log);
    this.nbd = new NbdServer({
      exports: this.registry,
      log: log.child({ component: 'nbd' }),
      maxInflight: config.nbdMaxInflight,
    });
  }

  /** Starts everything; on any failure undoes what was started and rethrows. */
  static async start(config: ValidatedConfig, log: Logger): Promise<Daemon> {
    const lock = DataDirLock.acquire(config.dataDir);
    const daemon = new Daemon(config, log, lock);
    try {
      await daemon.#open();
    } catch (err) {
      await daemon.close();
      throw err;
    }
    return daemon;
  }

  get endpoints(): DaemonEndpoints {
    return this.#endpoints;
  }

  async #open(): Promise<void> {
    for (const spec of this.config.exportSpecs) {
      const { device, overlay } = await this.#openExport(spec);
      this.registry.add({
        name: spec.name,
        device,
        description: spec.description,
        source: spec.source.kind === 'file' ? spec.source.path : `memory:${spec.source.size}`,
        details: overlay ? () => ({ overlay: overlay.stats() }) : undefined,
      });
      this.#log.info('export added', {
        export: spec.name,
        size: device.size,
        source: spec.source.kind,
        ...(overlay ? { overlay: overlay.dir, overlayBytes: overlay.stats().allocatedBytes } : {}),
      });
    }
    for (const a of this.config.nbd) {
      const { host, port } = parseTcpAddress(a);
      const bound = await this.nbd.listenTcp(host, port);
      if (bound.kind === 'tcp') this.#endpoints.nbd.push(formatTcpAddress(bound));
    }
    for (const p of this.config.nbdSocket) {
      await this.nbd.listenUnix(p);
      this.#endpoints.nbdSocket.push(p);
    }
    if (this.config.http !== 'off') {
      const { host, port } = parseTcpAddress(this.config.http);
      this.#api = createApi({
        registry: this.registry,
        log: this.#log.child({ component: 'api' }),
        version: VERSION,
        startedAt: this.startedAt,
        endpoints: () => this.#endpoints,
        config: () => {
          const { exportSpecs: _specs, ...plain } = this.config;
          return plain;
        },
      });
      try {
        await this.#api.listen({ host, port });
      } catch (err) {
        throw new ReboundError('ERR_LISTEN_FAILED', `cannot listen for HTTP on ${this.config.http}: ${(err as Error).message}`, { cause: err });
      }
      const addr = this.#api.server.address();
      if (addr && typeof addr === 'object') this.#endpoints.http = formatTcpAddress({ host: addr.address, port: addr.port });
      this.#lock.update({ http: this.#endpoints.http });
      this.#log.info('HTTP API listening', { address: this.#endpoints.http });
    }
  }

  async #openExport(spec: ExportSpec): Promise<{ device: BlockDevice; overlay?: CowOverlay }> {
    if (spec.source.kind === 'memory') return { device: new MemoryDevice(spec.source.size) };
    const base = await RawFileDevice.open(spec.source.path);
    if (!spec.cow) return { device: base };
    try {
      const overlay = await CowOverlay.open(base, {
        dir: spec.cow.dir ?? defaultOverlayDir(this.config.dataDir, spec.name),
        baseId: spec.source.path,
        maxBytes: spec.cow.quota,
        blockSize: spec.cow.blockSize,
      });
      return { device: overlay, overlay };
    } catch (err) {
      await base.close();
      throw err;
    }
  }

  /** Graceful shutdown; idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#log.info('shutting down');
      await Promise.allSettled([this.#api?.close(), this.nbd.close(this.config.shutdownTimeoutMs)]);
      await this.registry.closeAll();
      this.#lock.release();
      this.#log.info('stopped');
    })();
    return this.#closing;
  }
}

/** Where an export's overlay lives unless `cow=DIR` says otherwise. */
export function defaultOverlayDir(dataDir: string, exportName: string): string {
  return path.join(dataDir, 'overlays', encodeURIComponent(exportName));
}
