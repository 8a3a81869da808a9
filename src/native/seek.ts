/**
 * SEEK_DATA / SEEK_HOLE for raw files (blockdev/base/disk-file.ts), through rebound's small native
 * addon (src/native/seek.c, built by tools/build-native.sh at setup; Node has no lseek).
 *
 * The addon is optional: if it was not built (or does not load), `seeker()` is undefined and
 * callers report every byte as data — always correct, only slower for sparse files. Nothing here
 * ever reports data as a hole: a failed seek (a filesystem without SEEK_DATA says EINVAL) makes
 * the caller fall back to "all data" too.
 */
import { addonError, addonFunctions } from './addon.js';

export interface Seeker {
  /** First offset >= `offset` holding data, or -1 when only holes follow up to the end. */
  seekData(fd: number, offset: number): number;
  /** First offset >= `offset` in a hole (end of file counts as one), or -1 past the end. */
  seekHole(fd: number, offset: number): number;
}

/** The addon's seek functions, or undefined when it is not built. */
export function seeker(): Seeker | undefined {
  return addonFunctions<Seeker>('seekData', 'seekHole');
}

/** Why the addon is unavailable (for a log line), or undefined when it loaded. */
export function seekerError(): string | undefined {
  return addonError();
}
