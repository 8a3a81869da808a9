/**
 * WorkerPool: a fixed set of node:worker_threads running one script, for CPU work that must not
 * hold the event loop (chunk decompression, digests, compression: repo/chunk-worker.ts).
 *
 * Design notes:
 *  - The script is given as source text and run as an eval worker, so the same code runs from
 *    dist/ and under the test runner (which cannot start a worker from a .ts file). It receives
 *    `workerData` and answers `{id, ok, value}` or `{id, ok: false, error: {code, message}}` on
 *    its parent port; it may run several tasks at once (awaiting libuv work).
 *  - Buffers are moved, not copied: the caller lists the ArrayBuffers to transfer, and so does
 *    the worker for its answer (a transferred ArrayBuffer is detached on the sending side).
 *  - A task goes to the worker with the fewest tasks outstanding. Workers start lazily and are
 *    unref'd while idle, so an idle pool never keeps the process alive, and ref'd while busy,
 *    so an awaited task does.
 *  - A worker that dies (a crash in native code, an uncaught error) fails its outstanding tasks
 *    with ERR_INTERNAL-style errors and is replaced at the next task: never a hung caller.
 */
import { Worker } from 'node:worker_threads';

export interface WorkerError {
  code: string;
  message: string;
}

interface Slot {
  worker: Worker;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>;
}

export class WorkerPoolError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

export class WorkerPool {
  readonly size: number;
  readonly #source: string;
  readonly #workerData: unknown;
  readonly #slots: Array<Slot | undefined>;
  #nextId = 1;
  #closed = false;

  constructor(opts: { source: string; size: number; workerData?: unknown }) {
    if (!(opts.size >= 1)) throw new Error(`worker pool size must be at least 1 (got ${opts.size})`);
    this.size = Math.floor(opts.size);
    this.#source = opts.source;
    this.#workerData = opts.workerData;
    this.#slots = new Array<Slot | undefined>(this.size).fill(undefined);
  }

  /** Runs one task; `transfer` lists the ArrayBuffers moved to the worker (detached here). */
  run<T>(task: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.#closed) return Promise.reject(new WorkerPoolError('ESHUTDOWN', 'worker pool is closed'));
    const slot = this.#pick();
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      slot.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      if (slot.pending.size === 1) slot.worker.ref();
      try {
        slot.worker.postMessage({ id, ...task }, transfer);
      } catch (err) {
        slot.pending.delete(id);
        if (slot.pending.size === 0) slot.worker.unref();
        reject(err);
      }
    });
  }

  /** Tasks outstanding per worker (tests, stats). */
  load(): number[] {
    return this.#slots.map((s) => s?.pending.size ?? 0);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const slots = this.#slots.splice(0, this.#slots.length);
    await Promise.all(slots.map((s) => s?.worker.terminate()));
  }

  #pick(): Slot {
    let best = -1;
    let bestLoad = Infinity;
    for (let i = 0; i < this.size; i++) {
      const s = this.#slots[i];
      const n = s ? s.pending.size : 0;
      if (n < bestLoad) {
        best = i;
        bestLoad = n;
      }
      if (n === 0) break;
    }
    return this.#slots[best] ?? this.#start(best);
  }

  #start(i: number): Slot {
    const worker = new Worker(this.#source, { eval: true, workerData: this.#workerData });
    worker.unref();
    const slot: Slot = { worker, pending: new Map() };
    this.#slots[i] = slot;
    worker.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: WorkerError }) => {
      const p = slot.pending.get(m.id);
      if (!p) return;
      slot.pending.delete(m.id);
      if (slot.pending.size === 0) worker.unref();
      if (m.ok) p.resolve(m.value);
      else p.reject(new WorkerPoolError(m.error?.code ?? 'EWORKER', m.error?.message ?? 'worker task failed'));
    });
    const fail = (err: Error): void => {
      if (this.#slots[i] === slot) this.#slots[i] = undefined;
      for (const p of slot.pending.values()) p.reject(new WorkerPoolError('EWORKER', `worker thread failed: ${err.message}`));
      slot.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    return slot;
  }
}
