/**
 * FaultLayer (tests only): injects delays and errors into any device, to prove that front ends
 * answer out of order, keep connections alive after errors, and drain in-flight I/O on shutdown.
 * Every call is passed on explicitly, including the write path.
 */
import { BlockError, type BlockErrorCode } from '../../errors.js';
import { Layer } from '../layer.js';
import type { BlockDevice, Extent, IoOptions, WriteOptions, ZeroOptions } from '../types.js';

export type FaultOp = 'read' | 'write' | 'flush' | 'trim' | 'zero' | 'extents';

export interface FaultRules {
  /** Milliseconds to wait before the call; 0 or undefined for none. */
  delayMs?: (op: FaultOp, offset: number, length: number) => number | undefined;
  /** An error code to fail the call with, or undefined to let it through. */
  error?: (op: FaultOp, offset: number, length: number) => BlockErrorCode | undefined;
}

export class FaultLayer extends Layer {
  readonly name = 'fault';
  rules: FaultRules;

  constructor(next: BlockDevice, rules: FaultRules = {}) {
    super(next);
    this.rules = rules;
  }

  override async read(dst: Uint8Array, offset: number, opts?: IoOptions): Promise<void> {
    await this.#inject('read', offset, dst.length);
    return this.next.read(dst, offset, opts);
  }

  async write(src: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    await this.#inject('write', offset, src.length);
    return this.next.write(src, offset, opts);
  }

  async flush(opts?: IoOptions): Promise<void> {
    await this.#inject('flush', 0, 0);
    return this.next.flush(opts);
  }

  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    await this.#inject('trim', offset, length);
    return this.next.trim(offset, length, opts);
  }

  async zero(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    await this.#inject('zero', offset, length);
    return this.next.zero(offset, length, opts);
  }

  override async extents(offset: number, length: number, opts?: IoOptions): Promise<Extent[]> {
    await this.#inject('extents', offset, length);
    return this.next.extents(offset, length, opts);
  }

  async #inject(op: FaultOp, offset: number, length: number): Promise<void> {
    const delay = this.rules.delayMs?.(op, offset, length);
    if (delay) await new Promise((r) => setTimeout(r, delay));
    const code = this.rules.error?.(op, offset, length);
    if (code) throw new BlockError(code, `injected ${code} on ${op}`);
  }
}
