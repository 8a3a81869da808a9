/**
 * SEEK_DATA / SEEK_HOLE for raw files (blockdev/base/disk-file.ts), through rebound's small native
 * addon (src/native/seek.c, built by tools/build-native.sh at setup; Node has no lseek).
 *
 * The addon is optional: if it was not built (or does not load), `seeker()` is undefined and
 * callers report every byte as data — always correct, only slower for sparse files. Nothing here
 * ever reports data as a hole: a failed seek (a filesystem without SEEK_DATA says EINVAL) makes
 * the caller fall back to "all data" too.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Seeker {
  /** First offset >= `offset` holding data, or -1 when only holes follow up to the end. */
  seekData(fd: number, offset: number): number;
  /** First offset >= `offset` in a hole (end of file counts as one), or -1 past the end. */
  seekHole(fd: number, offset: number): number;
}

/** Where tools/build-native.sh puts the addon: src/native/build/Release, from src/native or dist/native alike. */
export const ADDON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/native/build/Release/rebound_native.node');

let loaded: { seeker: Seeker | undefined; error: string | undefined } | undefined;

function load(): NonNullable<typeof loaded> {
  if (!loaded) {
    try {
      const m = createRequire(import.meta.url)(ADDON_PATH) as Seeker;
      loaded = { seeker: typeof m.seekData === 'function' && typeof m.seekHole === 'function' ? m : undefined, error: undefined };
    } catch (err) {
      loaded = { seeker: undefined, error: (err as Error).message };
    }
  }
  return loaded;
}

/** The addon's seek functions, or undefined when it is not built. */
export function seeker(): Seeker | undefined {
  return load().seeker;
}

/** Why the addon is unavailable (for a log line), or undefined when it loaded. */
export function seekerError(): string | undefined {
  return load().error;
}
