/**
 * Access maps (warm boots from an S3 repository): which chunks of a point's disk clients read while
 * it was recovered or exported, in the order they were first needed, kept with the point as
 * `vms/<vm>/<id>/access/<disk>.map`. When that disk is opened again, the chunks it names are
 * fetched into the disk cache in that order, a few at a time, ahead of the guest asking for them.
 *
 * Design notes:
 *  - Format: `RBAMAP01` (8 bytes), version u32 BE (1), count u32 BE, then `count` chunk numbers
 *    (u32 BE). A map is a hint: a malformed or stale one (chunk numbers past the disk) is ignored;
 *    whatever is fetched is verified like every read.
 *  - Recording keeps the first MAX_ENTRIES chunk numbers (a boot touches far fewer); the map is
 *    written when the last opener closes the disk and every SAVE_INTERVAL_MS while it is open and
 *    has grown, so a daemon that is killed keeps most of it. An unchanged map is not rewritten.
 *  - A new recording starts from the map that was loaded, so chunks the last boot needed that
 *    this one did not (yet) stay in it.
 */
import type { FixedIndex } from './format.js';

const MAGIC = Buffer.from('RBAMAP01');
const VERSION = 1;
const HEADER = 16;
export const MAX_ENTRIES = 1 << 20;
export const SAVE_INTERVAL_MS = 30_000;
/** Chunks prefetched at once. */
export const PREFETCH_CONCURRENCY = 8;

export function accessMapName(disk: string): string {
  return `access/${disk}.map`;
}

export function encodeAccessMap(chunks: Iterable<number>): Buffer {
  const list = [...chunks];
  const b = Buffer.alloc(HEADER + 4 * list.length);
  MAGIC.copy(b, 0);
  b.writeUInt32BE(VERSION, 8);
  b.writeUInt32BE(list.length, 12);
  list.forEach((c, k) => b.writeUInt32BE(c, HEADER + 4 * k));
  return b;
}

/** The chunk numbers of a map, or undefined if it is not a map of a disk with `count` chunks. */
export function decodeAccessMap(b: Buffer, count: number): number[] | undefined {
  if (b.length < HEADER || !b.subarray(0, 8).equals(MAGIC) || b.readUInt32BE(8) !== VERSION) return undefined;
  const n = b.readUInt32BE(12);
  if (b.length !== HEADER + 4 * n || n > MAX_ENTRIES) return undefined;
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const c = b.readUInt32BE(HEADER + 4 * k);
    if (c >= count) return undefined;
    out.push(c);
  }
  return out;
}

/** Records one disk's accesses and saves them through `save` (see the design notes). */
export class AccessRecorder {
  readonly #chunks = new Set<number>();
  readonly #save: (map: Buffer) => Promise<void>;
  #saved = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(save: (map: Buffer) => Promise<void>, loaded: number[] = []) {
    this.#save = save;
    for (const c of loaded) this.#chunks.add(c);
    this.#saved = this.#chunks.size;
    this.#timer = setInterval(() => void this.flush(), SAVE_INTERVAL_MS);
    this.#timer.unref();
  }

  record(i: number): void {
    if (this.#chunks.size < MAX_ENTRIES) this.#chunks.add(i);
  }

  /** Writes the map if it grew since the last write (errors are dropped: a map is a hint). */
  async flush(): Promise<void> {
    if (this.#chunks.size === this.#saved) return;
    const size = this.#chunks.size;
    await this.#save(encodeAccessMap(this.#chunks)).then(
      () => (this.#saved = size),
      () => undefined,
    );
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }
}

/** Fetches the chunks a map names (in its order) through `fetch`; stops early on `signal`. */
export async function prefetch(index: FixedIndex, chunks: number[], fetch: (digest: Uint8Array) => Promise<unknown>, signal?: AbortSignal): Promise<number> {
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < chunks.length && !signal?.aborted) {
      const d = index.digest(chunks[next++]!);
      if (!d) continue;
      await fetch(d).then(
        () => done++,
        () => undefined,
      );
    }
  };
  await Promise.all(Array.from({ length: PREFETCH_CONCURRENCY }, worker));
  return done;
}
