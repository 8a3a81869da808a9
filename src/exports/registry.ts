/**
 * ExportRegistry: export name -> device + metadata. The only thing front ends (NBD, NFS, FUSE)
 * look up. The registry owns the devices registered with it.
 *
 * Front ends `attach()` an export when a client starts using it and `detach()` when it leaves.
 * `remove()` unregisters at once (new clients no longer find the name) and closes the device
 * after in-flight requests drain; `retire()` (used when a name moves to a new device, like
 * VM@latest/DISK after a backup) unregisters at once but closes the device only when its last
 * attached client has gone, so open connections keep working.
 */
import { EventEmitter } from 'node:events';
import { checked, type CheckedDevice } from '../blockdev/checked.js';
import { describeStack } from '../blockdev/layer.js';
import type { BlockDevice } from '../blockdev/types.js';
import { ReboundError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';

/** NBD allows 4096-byte names; we keep names printable so they work in URIs and logs. */
const NAME_PATTERN = /^[A-Za-z0-9._@/:+-]{1,255}$/;

export interface ExportOptions {
  name: string;
  device: BlockDevice;
  description?: string;
  /** Where the data comes from, for listings: a path, `memory`, later a restore point. */
  source?: string;
  /** Extra facts for the API (overlay size, quota, ...), computed when listed. */
  details?: () => Record<string, unknown>;
}

export class Export {
  readonly name: string;
  readonly description: string;
  readonly source: string;
  readonly device: CheckedDevice;
  readonly createdAt = new Date();
  readonly #details: (() => Record<string, unknown>) | undefined;
  #connections = 0;
  #retired = false;

  constructor(opts: ExportOptions, log: Logger) {
    this.name = opts.name;
    this.description = opts.description ?? '';
    this.source = opts.source ?? opts.device.name;
    this.#details = opts.details;
    this.device = checked(opts.device, {
      onUnexpectedError: (err, op) => log.error('unexpected device error', { export: opts.name, op, err }),
    });
  }

  /** Open front-end connections (NBD clients, ...). */
  get connections(): number {
    return this.#connections;
  }

  /** A front end starts using this export. */
  attach(): void {
    this.#connections++;
  }

  /** A front end stops using it; a retired export closes when the last one leaves. */
  detach(): void {
    this.#connections--;
    if (this.#retired && this.#connections === 0) void this.device.close().catch(() => undefined);
  }

  /** Marks the export as replaced: close now if unused, else when the last client detaches. */
  retire(): Promise<void> {
    this.#retired = true;
    return this.#connections === 0 ? this.device.close() : Promise.resolve();
  }

  get readOnly(): boolean {
    return !this.device.capabilities().canWrite;
  }

  /** A JSON-ready description for the API and `rebound exports --json`. */
  toJSON(): Record<string, unknown> {
    const caps = this.device.capabilities();
    return {
      name: this.name,
      description: this.description,
      source: this.source,
      size: this.device.size,
      readOnly: this.readOnly,
      stack: describeStack(this.device.next),
      capabilities: caps,
      connections: this.connections,
      inflight: this.device.inflight,
      createdAt: this.createdAt.toISOString(),
      ...(this.#details ? this.#details() : {}),
    };
  }
}

export class ExportRegistry extends EventEmitter<{ added: [Export]; removed: [Export] }> {
  readonly #exports = new Map<string, Export>();
  readonly #log: Logger;
  #defaultName: string | undefined;

  constructor(log: Logger = silentLogger) {
    super();
    this.#log = log;
  }

  static validateName(name: string): void {
    if (!NAME_PATTERN.test(name)) {
      throw new ReboundError(
        'ERR_INVALID_EXPORT_SPEC',
        `invalid export name '${name}': use 1-255 characters from A-Z a-z 0-9 . _ @ / : + -`,
      );
    }
  }

  add(opts: ExportOptions): Export {
    ExportRegistry.validateName(opts.name);
    if (this.#exports.has(opts.name)) {
      throw new ReboundError('ERR_EXPORT_EXISTS', `an export named '${opts.name}' already exists`);
    }
    const exp = new Export(opts, this.#log);
    this.#exports.set(exp.name, exp);
    this.#defaultName ??= exp.name;
    this.emit('added', exp);
    return exp;
  }

  /** The export a client gets when it asks for the empty name '' (the first one added, unless set). */
  get defaultName(): string | undefined {
    return this.#defaultName;
  }

  set defaultName(name: string | undefined) {
    this.#defaultName = name;
  }

  /** Looks up by name; '' resolves to the default export. */
  get(name: string): Export | undefined {
    if (name === '') return this.#defaultName === undefined ? undefined : this.#exports.get(this.#defaultName);
    return this.#exports.get(name);
  }

  list(): Export[] {
    return [...this.#exports.values()];
  }

  /** Unregisters an export and closes its device once in-flight requests have drained. */
  async remove(name: string): Promise<void> {
    const exp = this.#unregister(name);
    await exp.device.close();
  }

  /** Unregisters an export; its device closes when its last client detaches (see above). */
  async retire(name: string): Promise<void> {
    await this.#unregister(name).retire();
  }

  has(name: string): boolean {
    return this.#exports.has(name);
  }

  #unregister(name: string): Export {
    const exp = this.#exports.get(name);
    if (!exp) throw new ReboundError('ERR_EXPORT_NOT_FOUND', `no export named '${name}'`);
    this.#exports.delete(name);
    if (this.#defaultName === name) this.#defaultName = this.#exports.keys().next().value;
    this.emit('removed', exp);
    return exp;
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.list().map((e) => this.remove(e.name)));
  }
}
