/**
 * Backup sources: where `rebound backup` reads a disk from. A raw image file or block device, or
 * an NBD export (nbd://HOST:PORT/NAME, nbd+unix:///NAME?socket=PATH) such as `qemu-nbd` or QEMU's
 * NBD server. NBD sources also say which ranges are holes/zeroes (base:allocation), and, with a
 * dirty bitmap, which ranges changed since the bitmap was started (qemu:dirty-bitmap:NAME).
 */
import { RawFileDevice } from '../blockdev/base/raw-file.js';
import { BlockError, errorText, ReboundError } from '../errors.js';
import { NbdClient } from '../nbd/client.js';
import { STATE_ZERO } from '../nbd/protocol.js';

export type Range = [offset: number, length: number];

export interface BackupSource {
  readonly description: string;
  readonly size: number;
  read(dst: Uint8Array, offset: number): Promise<void>;
  /** Ranges known to read as zeroes, if the source can tell. */
  zeroRanges?(): Promise<Range[]>;
  /** Ranges changed since the dirty bitmap started, if a bitmap was asked for. */
  dirtyRanges?(): Promise<Range[]>;
  /**
   * Ranges that may differ from the restore point the source was made from (`BackupRequest.basePoint`),
   * for sources that know (a recovery session's overlay). Everything else reuses that point's chunks.
   */
  changedRanges?(): Promise<Range[]>;
  close(): Promise<void>;
}

export function isNbdUri(s: string): boolean {
  return /^nbd(\+unix)?:\/\//.test(s);
}

export async function openSource(spec: string, opts: { dirtyBitmap?: string } = {}): Promise<BackupSource> {
  if (isNbdUri(spec)) return NbdSource.open(spec, opts.dirtyBitmap);
  if (opts.dirtyBitmap) {
    throw new ReboundError('ERR_BACKUP_SOURCE', `--dirty-bitmap needs an NBD source (e.g. qemu-nbd -B ${opts.dirtyBitmap}), not the file ${spec}`);
  }
  let dev: RawFileDevice;
  try {
    dev = await RawFileDevice.open(spec);
  } catch (err) {
    throw new ReboundError('ERR_BACKUP_SOURCE', errorText(err), { cause: err });
  }
  return {
    description: spec,
    size: dev.size,
    read: (dst, offset) => dev.read(dst, offset),
    close: () => dev.close(),
  };
}

const STATUS_STEP = 1024 * 1024 * 1024; // one BLOCK_STATUS request covers at most this much

class NbdSource implements BackupSource {
  readonly description: string;
  readonly size: number;
  readonly #client: NbdClient;
  readonly #bitmap: string | undefined;

  private constructor(uri: string, client: NbdClient, bitmap: string | undefined) {
    this.description = uri;
    this.#client = client;
    this.size = client.size;
    this.#bitmap = bitmap;
  }

  static async open(uri: string, bitmap?: string): Promise<NbdSource> {
    const contexts = ['base:allocation', ...(bitmap ? [`qemu:dirty-bitmap:${bitmap}`] : [])];
    try {
      return new NbdSource(uri, await NbdClient.connect(uri, { metaContexts: contexts }), bitmap);
    } catch (err) {
      const hint = bitmap && /qemu:dirty-bitmap/.test(errorText(err)) ? ` (is the bitmap exported? qemu-nbd -B ${bitmap})` : '';
      throw new ReboundError('ERR_BACKUP_SOURCE', `cannot read ${uri}: ${errorText(err)}${hint}`, { cause: err });
    }
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    return this.#client.read(dst, offset).catch((err: unknown) => {
      throw new BlockError('EIO', `reading ${this.description} at ${offset}: ${errorText(err)}`, { cause: err });
    });
  }

  zeroRanges(): Promise<Range[]> {
    return this.#walk('base:allocation', (flags) => (flags & STATE_ZERO) !== 0);
  }

  dirtyRanges(): Promise<Range[]> {
    if (!this.#bitmap) return Promise.resolve([[0, this.size]]);
    return this.#walk(`qemu:dirty-bitmap:${this.#bitmap}`, (flags) => (flags & 1) !== 0);
  }

  /** Walks the whole export with BLOCK_STATUS, collecting ranges whose flags match. */
  async #walk(context: string, match: (flags: number) => boolean): Promise<Range[]> {
    const out: Range[] = [];
    let pos = 0;
    while (pos < this.size) {
      const len = Math.min(STATUS_STEP, this.size - pos);
      const status = await this.#client.blockStatus(pos, len);
      const descriptors = status.get(context) ?? [];
      if (descriptors.length === 0) throw new ReboundError('ERR_BACKUP_SOURCE', `${this.description} sent no ${context} status at ${pos}`);
      for (const d of descriptors) {
        const n = Math.min(d.length, this.size - pos);
        if (n <= 0) break;
        if (match(d.flags)) {
          const last = out[out.length - 1];
          if (last && last[0] + last[1] === pos) last[1] += n;
          else out.push([pos, n]);
        }
        pos += n;
      }
    }
    return out;
  }

  close(): Promise<void> {
    return this.#client.close();
  }
}
