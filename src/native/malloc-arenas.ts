/**
 * Fewer glibc malloc arenas for the daemon, through rebound's native addon
 * (src/native/malloc-arenas.c; glibc reads MALLOC_ARENA_MAX only when a process starts).
 *
 * Why: glibc gives threads their own arenas (up to 8 per core), and the daemon's threads (the main
 * loop, libuv's pool, the chunk workers, V8's helpers) allocate and free buffers of every size in
 * all of them. Free memory then stays scattered over the arenas: a daemon fuzzed with 10^6 NBD
 * inputs grew its RSS 33 MiB after the warm-up while its JS heap stayed flat (two heap snapshots,
 * 36.5 and 36.4 MiB); with two arenas the same 150,000 inputs grew it 3.2 MiB instead of 15.7
 * (tools/fuzz/README.md).
 *
 * A MALLOC_ARENA_MAX in the environment wins (the C library has already applied it). Optional
 * like the rest of the addon: without it nothing changes.
 */
import { addonFunctions } from './addon.js';

/** The arenas the daemon keeps (glibc's default would be 8 per core). */
export const DAEMON_MALLOC_ARENAS = 2;

interface MallocArenaFns {
  setMallocArenaMax(n: number): boolean;
}

/**
 * Limits malloc arenas to `n` unless the environment set MALLOC_ARENA_MAX; true when the limit is
 * in force from here on, false when the environment's applies or it could not be set.
 */
export function limitMallocArenas(n = DAEMON_MALLOC_ARENAS, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.MALLOC_ARENA_MAX !== undefined) return false;
  const fns = addonFunctions<MallocArenaFns>('setMallocArenaMax');
  return fns?.setMallocArenaMax(n) ?? false;
}
