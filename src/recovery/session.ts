/**
 * RecoverySession: one recovered VM — its record (session-record.ts), its disks (session-disk.ts)
 * and the pin that keeps its restore point from being pruned while an overlay needs it. It does
 * not publish itself (SessionManager does) and runs no workflow.
 *
 * `commit(change)` is the only way the record changes: the change is applied to a copy, the copy
 * is saved durably (asynchronously, serialised with other saves), and only then is the change
 * applied in memory. A failed save rejects with a clear error and leaves memory as it was.
 */
import { QosLimiter } from '../blockdev/layers/qos.js';
import { errorText, ReboundError } from '../errors.js';
import type { SessionInfo } from '../exports/catalog.js';
import type { PointManifest } from '../repo/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { Logger } from '../util/log.js';
import { overlayAuthoritative } from './disk-state.js';
import { SessionDisk, type DiskHost } from './session-disk.js';
import type { PathGate } from '../util/path-policy.js';
import { saveRecord, type SessionRecord } from './session-record.js';

export interface SessionDeps {
  repo: Repository;
  /** Limits shared by all session disks. */
  shared: QosLimiter;
  log: Logger;
  /** The daemon's path policy for migration targets (DiskHost.targetGate). */
  targetGate?: PathGate;
}

export class RecoverySession implements DiskHost {
  readonly dir: string;
  readonly disks: SessionDisk[] = [];
  readonly limiter: QosLimiter;
  readonly shared: QosLimiter;
  readonly repo: Repository;
  readonly log: Logger;
  readonly targetGate: PathGate | undefined;
  readonly info: SessionInfo;
  #record: SessionRecord;
  #saving: Promise<void> = Promise.resolve();
  #unpin: (() => void) | undefined;

  private constructor(dir: string, record: SessionRecord, deps: SessionDeps) {
    this.dir = dir;
    this.#record = record;
    this.repo = deps.repo;
    this.shared = deps.shared;
    this.log = deps.log;
    this.targetGate = deps.targetGate;
    this.limiter = new QosLimiter(record.qos);
    this.info = { name: record.name, vm: record.vm, pointId: record.pointId, createdAt: new Date(record.createdAt), filesDir: dir };
  }

  get name(): string {
    return this.#record.name;
  }

  /** The live record (read it; change it only through commit()). */
  get record(): SessionRecord {
    return this.#record;
  }

  /** Opens every disk's stack as its state says. Pins the restore point while an overlay needs it. */
  static async open(dir: string, record: SessionRecord, m: PointManifest, deps: SessionDeps): Promise<RecoverySession> {
    const s = new RecoverySession(dir, record, deps);
    try {
      for (const d of record.disks) s.disks.push(await SessionDisk.open(s, d, m));
      s.#pinIfNeeded();
      return s;
    } catch (err) {
      await s.close();
      throw err;
    }
  }

  disk(name: string): SessionDisk | undefined {
    return this.disks.find((d) => d.name === name);
  }

  commit(change?: (r: SessionRecord) => void): Promise<void> {
    const run = this.#saving.then(async () => {
      const next = structuredClone(this.#record);
      change?.(next);
      try {
        await saveRecord(this.dir, next);
      } catch (err) {
        throw new ReboundError('ERR_DATA_DIR_UNUSABLE', `cannot save the state of session ${this.name} (${errorText(err)}); nothing was changed`, { cause: err });
      }
      change?.(this.#record);
    });
    this.#saving = run.catch(() => undefined);
    return run;
  }

  /** Unpins the restore point once no disk's overlay needs it. */
  releasePointIfDone(): void {
    if (this.disks.some((d) => overlayAuthoritative(d.state) || d.overlay)) return;
    this.#unpin?.();
    this.#unpin = undefined;
  }

  #pinIfNeeded(): void {
    if (this.disks.some((d) => overlayAuthoritative(d.state) || d.overlay)) this.#unpin = this.repo.pin(this.#record.vm, this.#record.pointId);
  }

  /** Stops copiers (states kept, so a restart resumes them), drains and closes every device. */
  async close(): Promise<void> {
    for (const d of this.disks) await d.close();
    await this.#saving;
    this.#unpin?.();
    this.#unpin = undefined;
  }
}
