/**
 * What every chunk store keeps beside its chunks, whatever holds them (a directory, a bucket):
 *  - claims: digests running backups and restores of this process reference; remove() refuses
 *    them (see ChunkStore's design notes for the race they close);
 *  - totals: chunks and stored bytes, from one walk of list() at the first ask, then kept by
 *    put() and remove() (a remove() without the chunk's size makes the next ask walk again).
 */
import type { ClaimSet, StoreTotals, StoredChunk } from './backend.js';

export abstract class ChunkBookkeeping {
  readonly #claims = new Set<ClaimSet>();
  #totals: StoreTotals | undefined;
  #totalsWalk: Promise<StoreTotals> | undefined;

  abstract list(): AsyncGenerator<StoredChunk>;

  /** Registers a claim set; gc keeps every chunk in it. Call `release` when done. */
  claim(): { set: ClaimSet; release: () => void } {
    const set: ClaimSet = new Set();
    this.#claims.add(set);
    return { set, release: () => this.#claims.delete(set) };
  }

  isClaimed(hex: string): boolean {
    for (const s of this.#claims) if (s.has(hex)) return true;
    return false;
  }

  /**
   * Chunks and bytes stored. Chunks written or removed while the one walk runs may be counted
   * wrongly (a gauge's approximation).
   */
  async totals(): Promise<StoreTotals> {
    if (this.#totals) return { ...this.#totals };
    this.#totalsWalk ??= (async () => {
      const t: StoreTotals = { chunks: 0, storedBytes: 0 };
      for await (const c of this.list()) {
        t.chunks++;
        t.storedBytes += c.size;
      }
      this.#totals = t;
      return { ...t };
    })().finally(() => (this.#totalsWalk = undefined));
    return this.#totalsWalk;
  }

  protected countStored(bytes: number): void {
    if (!this.#totals) return;
    this.#totals.chunks++;
    this.#totals.storedBytes += bytes;
  }

  protected countRemoved(size: number | undefined): void {
    if (this.#totals && size !== undefined) {
      this.#totals.chunks--;
      this.#totals.storedBytes -= size;
    } else {
      this.#totals = undefined;
    }
  }
}
