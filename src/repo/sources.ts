/**
 * Backup sources: where `rebound backup` reads a disk from. A raw image file or block device
 * (RawFileDevice), or an NBD export (nbd://HOST:PORT/NAME, nbd+unix:///NAME?socket=PATH) such as
 * `qemu-nbd` or QEMU's NBD server (NbdClientDevice, read-only whatever the export allows).
 *
 * A source is a read-only BlockDevice plus what the ingest may skip: ranges its extents call zero
 * are not read (base:allocation for NBD), and with a QEMU dirty bitmap (qemu:dirty-bitmap:NAME)
 * only the ranges changed since the bitmap started are.
 */
import { isGateRefusal } from '../blockdev/base/disk-file.js';
import { NbdClientDevice } from '../blockdev/base/nbd-client.js';
import { RawFileDevice } from '../blockdev/base/raw-file.js';
import type { BlockDevice } from '../blockdev/types.js';
import { errorText, ReboundError } from '../errors.js';
import { isNbdUri, parseNbdUri } from '../nbd/client.js';
import type { PathGate } from '../util/path-policy.js';

export type Range = [offset: number, length: number];

export interface BackupSource {
  /** What the restore point records as the disk's source (a path, a URI, session:NAME/DISK). */
  readonly description: string;
  /** The disk, read-only; closed by the backup. Ranges its extents report as zero are not read. */
  readonly device: BlockDevice;
  /** Ranges changed since the dirty bitmap started, if a bitmap was asked for. */
  dirtyRanges?(): Promise<Range[]>;
  /**
   * Ranges that may differ from the restore point the source was made from (`BackupRequest.basePoint`),
   * for sources that know (a recovery session's overlay). Everything else reuses that point's chunks.
   */
  changedRanges?(): Promise<Range[]>;
}

/**
 * Opens a backup source. With a gate (a request's path policy), a file must be allowed as opened
 * and an nbd+unix socket as named (util/path-policy.ts); its refusal is ERR_PATH_NOT_ALLOWED.
 */
export async function openSource(spec: string, opts: { dirtyBitmap?: string; gate?: PathGate } = {}): Promise<BackupSource> {
  if (isNbdUri(spec)) {
    if (opts.gate) checkNbdSocket(spec, opts.gate);
    return openNbdSource(spec, opts.dirtyBitmap);
  }
  if (opts.dirtyBitmap) {
    throw new ReboundError('ERR_BACKUP_SOURCE', `--dirty-bitmap needs an NBD source (e.g. qemu-nbd -B ${opts.dirtyBitmap}), not the file ${spec}`);
  }
  try {
    return { description: spec, device: await RawFileDevice.open(spec, { gate: opts.gate }) };
  } catch (err) {
    if (isGateRefusal(err)) throw err;
    throw new ReboundError('ERR_BACKUP_SOURCE', errorText(err), { cause: err });
  }
}

async function openNbdSource(uri: string, bitmap: string | undefined): Promise<BackupSource> {
  const context = bitmap ? `qemu:dirty-bitmap:${bitmap}` : undefined;
  let device: NbdClientDevice;
  try {
    device = await NbdClientDevice.open(uri, { readOnly: true, metaContexts: context ? [context] : [] });
  } catch (err) {
    const hint = bitmap && /qemu:dirty-bitmap/.test(errorText(err)) ? ` (is the bitmap exported? qemu-nbd -B ${bitmap})` : '';
    throw new ReboundError('ERR_BACKUP_SOURCE', `cannot read ${uri}: ${errorText(err)}${hint}`, { cause: err });
  }
  if (!context) return { description: uri, device };
  return { description: uri, device, dirtyRanges: () => dirtyRanges(device, context) };
}

/** Lets the gate check the socket of an nbd+unix URI (TCP URIs are not paths). */
export function checkNbdSocket(uri: string, gate: PathGate): void {
  if (!uri.startsWith('nbd+unix:')) return;
  let socket: string;
  try {
    socket = (parseNbdUri(uri) as { socket: string }).socket;
  } catch (err) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', errorText(err), { cause: err });
  }
  gate.socket(socket);
}

/** Walks the whole export with BLOCK_STATUS of a dirty bitmap, collecting the dirty ranges. */
async function dirtyRanges(device: NbdClientDevice, context: string): Promise<Range[]> {
  const out: Range[] = [];
  let pos = 0;
  while (pos < device.size) {
    const descriptors = await device.blockStatus(context, pos, device.size - pos);
    if (descriptors.length === 0) throw new ReboundError('ERR_BACKUP_SOURCE', `${device.spec} sent no ${context} status at ${pos}`);
    for (const d of descriptors) {
      if (d.flags & 1) {
        const last = out[out.length - 1];
        if (last && last[0] + last[1] === pos) last[1] += d.length;
        else out.push([pos, d.length]);
      }
      pos += d.length;
    }
  }
  return out;
}
