/**
 * Full restore of one disk of a restore point to a file, a block device or an NBD export.
 * Chunks are read (and verified) several at a time and written in place. Zero chunks are not
 * written to a new or truncated file (it stays sparse); on a block device or an NBD target they
 * are zeroed (WRITE_ZEROES where the target offers it), since old data may be there.
 * The target is synced (fsync / NBD FLUSH) before the restore reports success.
 */
import fs from 'node:fs';
import { errorText, ReboundError } from '../errors.js';
import { NbdClient } from '../nbd/client.js';
import { TFlag } from '../nbd/protocol.js';
import { pwrite } from '../util/file-io.js';
import type { Repository } from './repository.js';
import { isNbdUri } from './sources.js';

export interface RestoreRequest {
  vm: string;
  point?: string;
  disk: string;
  /** A file path (created if missing), a block device, or an NBD URI. */
  to: string;
  concurrency?: number;
}

export interface RestoreProgress {
  totalBytes: number;
  doneBytes: number;
  writtenBytes: number;
}

export interface RestoreResult extends RestoreProgress {
  vm: string;
  point: string;
  disk: string;
  to: string;
  seconds: number;
}

interface Target {
  size: number;
  /** Zero chunks must be written (the target may hold old data). */
  mustZero: boolean;
  write(data: Uint8Array, offset: number): Promise<void>;
  zero(offset: number, length: number): Promise<void>;
  finish(): Promise<void>;
  abort(): Promise<void>;
}

export async function restore(
  repo: Repository,
  req: RestoreRequest,
  opts: { signal?: AbortSignal; onProgress?: (p: RestoreProgress) => void } = {},
): Promise<RestoreResult> {
  const started = Date.now();
  const m = await repo.point(req.vm, req.point ?? 'latest');
  const index = await repo.readIndex(m, req.disk);
  const target = await openTarget(req.to, index.size);
  const progress: RestoreProgress = { totalBytes: index.size, doneBytes: 0, writtenBytes: 0 };
  const unpin = repo.pin(m.vm, m.id); // prune and gc must not take the point away mid-restore
  const claims = repo.store.claim();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < index.count) {
      const i = next++;
      opts.signal?.throwIfAborted();
      const offset = i * index.chunkSize;
      const len = index.chunkLength(i);
      const digest = index.digest(i);
      if (digest) {
        claims.set.add(Buffer.from(digest).toString('hex'));
        await target.write(await repo.store.readChunk(digest), offset);
        progress.writtenBytes += len;
      } else if (target.mustZero) {
        await target.zero(offset, len);
      }
      progress.doneBytes += len;
      opts.onProgress?.({ ...progress });
    }
  };
  try {
    await Promise.all(Array.from({ length: req.concurrency ?? 8 }, worker));
    await target.finish();
  } catch (err) {
    await target.abort();
    throw err;
  } finally {
    claims.release();
    unpin();
  }
  return { vm: m.vm, point: m.id, disk: req.disk, to: req.to, ...progress, seconds: (Date.now() - started) / 1000 };
}

async function openTarget(to: string, size: number): Promise<Target> {
  if (isNbdUri(to)) return nbdTarget(to, size);
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(to);
  } catch {
    st = undefined;
  }
  const isDevice = st?.isBlockDevice() ?? false;
  let fd: number;
  try {
    fd = fs.openSync(to, isDevice ? 'r+' : 'w');
  } catch (err) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `cannot open restore target ${to}: ${errorText(err)}`, { cause: err });
  }
  if (!isDevice) fs.ftruncateSync(fd, size);
  const zeroBuf = Buffer.alloc(1024 * 1024);
  return {
    size,
    mustZero: isDevice,
    write: (data, offset) => pwrite(fd, data, offset).catch((err) => Promise.reject(targetError(err, to))),
    zero: async (offset, length) => {
      for (let pos = offset; pos < offset + length; pos += zeroBuf.length) {
        await pwrite(fd, zeroBuf.subarray(0, Math.min(zeroBuf.length, offset + length - pos)), pos).catch((err) => Promise.reject(targetError(err, to)));
      }
    },
    finish: async () => {
      await new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(targetError(err, to)) : resolve())));
      fs.closeSync(fd);
    },
    abort: async () => fs.closeSync(fd),
  };
}

async function nbdTarget(uri: string, size: number): Promise<Target> {
  let c: NbdClient;
  try {
    c = await NbdClient.connect(uri);
  } catch (err) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `cannot connect to restore target ${uri}: ${errorText(err)}`, { cause: err });
  }
  if (c.readOnly) {
    c.destroy();
    throw new ReboundError('ERR_INVALID_ARGUMENT', `restore target ${uri} is read-only`);
  }
  if (c.size < size) {
    c.destroy();
    throw new ReboundError('ERR_INVALID_ARGUMENT', `restore target ${uri} has ${c.size} bytes; the disk needs ${size}`);
  }
  const canZero = (c.transmissionFlags & TFlag.SEND_WRITE_ZEROES) !== 0;
  const zeroBuf = Buffer.alloc(1024 * 1024);
  return {
    size,
    mustZero: true,
    write: (data, offset) => c.write(data, offset),
    zero: async (offset, length) => {
      if (canZero) return c.zero(offset, length);
      for (let pos = offset; pos < offset + length; pos += zeroBuf.length) await c.write(zeroBuf.subarray(0, Math.min(zeroBuf.length, offset + length - pos)), pos);
    },
    finish: async () => {
      await c.flush();
      await c.close();
    },
    abort: async () => c.destroy(),
  };
}

function targetError(err: unknown, to: string): ReboundError {
  const code = (err as NodeJS.ErrnoException).code;
  return new ReboundError('ERR_TARGET_IO', `writing ${to}: ${code === 'ENOSPC' ? 'no space left on the target' : errorText(err)}`, { cause: err });
}
