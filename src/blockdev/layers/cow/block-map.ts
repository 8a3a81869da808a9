/**
 * BlockMap: the overlay's allocation map, 2 bits per block, in memory.
 *
 *   BASE (0)  the block reads from the device below (never written in this overlay)
 *   DATA (1)  the block's current content is in the overlay's data file
 *   ZERO (2)  the block reads as zeroes (trimmed or zeroed; shadows the base)
 *
 * Entries are packed four to a byte, little end first, in pages of PAGE_BYTES bytes (16384 blocks
 * each). Pages are allocated on first change, so a map over a 1 TiB disk costs nothing until
 * written; an absent page is all BASE. The map tracks which pages changed since the last
 * `takeDirty()` (the persistence code writes those) and keeps counts of DATA and ZERO blocks.
 */

export const BASE = 0;
export const DATA = 1;
export const ZERO = 2;
export type BlockState = typeof BASE | typeof DATA | typeof ZERO;

export const PAGE_BYTES = 4096;
export const BLOCKS_PER_PAGE = PAGE_BYTES * 4;

export interface Run {
  first: number;
  count: number;
  state: BlockState;
}

/** Number of DATA and ZERO entries in a byte, for fast counting on load. */
const DATA_IN_BYTE = new Uint8Array(256);
const ZERO_IN_BYTE = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  for (let i = 0; i < 4; i++) {
    const s = (b >> (i * 2)) & 3;
    if (s === DATA) DATA_IN_BYTE[b]!++;
    if (s === ZERO) ZERO_IN_BYTE[b]!++;
  }
}

export class BlockMap {
  readonly blocks: number;
  readonly #pages = new Map<number, Uint8Array>();
  #dirty = new Set<number>();
  #data = 0;
  #zero = 0;

  constructor(blocks: number) {
    this.blocks = blocks;
  }

  get dataBlocks(): number {
    return this.#data;
  }

  get zeroBlocks(): number {
    return this.#zero;
  }

  get pageCount(): number {
    return Math.ceil(this.blocks / BLOCKS_PER_PAGE);
  }

  hasPage(page: number): boolean {
    return this.#pages.has(page);
  }

  get(block: number): BlockState {
    const page = this.#pages.get(Math.floor(block / BLOCKS_PER_PAGE));
    if (!page) return BASE;
    const i = block % BLOCKS_PER_PAGE;
    return ((page[i >> 2]! >> ((i & 3) * 2)) & 3) as BlockState;
  }

  /** Sets `count` blocks from `first` to `state`. */
  setRange(first: number, count: number, state: BlockState): void {
    for (let b = first; b < first + count; b++) {
      const p = Math.floor(b / BLOCKS_PER_PAGE);
      let page = this.#pages.get(p);
      if (!page) {
        if (state === BASE) continue;
        page = new Uint8Array(PAGE_BYTES);
        this.#pages.set(p, page);
      }
      const i = b % BLOCKS_PER_PAGE;
      const shift = (i & 3) * 2;
      const old = (page[i >> 2]! >> shift) & 3;
      if (old === state) continue;
      page[i >> 2] = (page[i >> 2]! & ~(3 << shift)) | (state << shift);
      if (old === DATA) this.#data--;
      else if (old === ZERO) this.#zero--;
      if (state === DATA) this.#data++;
      else if (state === ZERO) this.#zero++;
      this.#dirty.add(p);
    }
  }

  /** Counts blocks in [first, first+count) that are not in `state`. */
  countNot(first: number, count: number, state: BlockState): number {
    let n = 0;
    for (let b = first; b < first + count; b++) if (this.get(b) !== state) n++;
    return n;
  }

  /** Maximal runs of equal state covering [first, first+count). */
  runs(first: number, count: number): Run[] {
    const out: Run[] = [];
    const end = first + count;
    let b = first;
    while (b < end) {
      const p = Math.floor(b / BLOCKS_PER_PAGE);
      const page = this.#pages.get(p);
      if (!page) {
        // A whole absent page is one BASE stretch.
        const stop = Math.min(end, (p + 1) * BLOCKS_PER_PAGE);
        push(out, b, stop - b, BASE);
        b = stop;
        continue;
      }
      const state = this.get(b);
      push(out, b, 1, state);
      b++;
    }
    return out;
  }

  /** Pages changed since the last call, as copies (safe to write while the map keeps changing). */
  takeDirty(): Array<{ page: number; bytes: Uint8Array }> {
    const dirty = this.#dirty;
    this.#dirty = new Set();
    return [...dirty].sort((a, b) => a - b).map((page) => ({ page, bytes: this.#pages.get(page)!.slice() }));
  }

  /** Gives pages back to the dirty set (a write of them failed and must be retried). */
  markDirty(pages: number[]): void {
    for (const p of pages) if (this.#pages.has(p)) this.#dirty.add(p);
  }

  get dirtyCount(): number {
    return this.#dirty.size;
  }

  /** Installs a page read from disk (not dirty). Entries beyond `blocks` are ignored. */
  loadPage(page: number, bytes: Uint8Array): void {
    const copy = Uint8Array.from(bytes.subarray(0, PAGE_BYTES));
    const lastBlock = Math.min(this.blocks, (page + 1) * BLOCKS_PER_PAGE);
    const validEntries = lastBlock - page * BLOCKS_PER_PAGE;
    // Clear stray bits past the end of the device, and invalid state 3.
    for (let i = 0; i < BLOCKS_PER_PAGE; i++) {
      const shift = (i & 3) * 2;
      const s = (copy[i >> 2]! >> shift) & 3;
      if (i >= validEntries || s === 3) copy[i >> 2] = copy[i >> 2]! & ~(3 << shift);
    }
    const old = this.#pages.get(page);
    if (old) for (const b of old) ((this.#data -= DATA_IN_BYTE[b]!), (this.#zero -= ZERO_IN_BYTE[b]!));
    this.#pages.set(page, copy);
    for (const b of copy) ((this.#data += DATA_IN_BYTE[b]!), (this.#zero += ZERO_IN_BYTE[b]!));
  }
}

function push(out: Run[], first: number, count: number, state: BlockState): void {
  const last = out[out.length - 1];
  if (last && last.state === state && last.first + last.count === first) last.count += count;
  else out.push({ first, count, state });
}
