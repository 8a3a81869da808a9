/**
 * Loads rebound's native addon (src/native/*.c, built by tools/build-native.sh at setup) once, for
 * the modules that wrap its parts (seek.ts, tls-record.ts). The addon is optional: when it was not
 * built or does not load, `addon()` is undefined and every caller has a slower pure-Node path.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where tools/build-native.sh puts the addon: src/native/build/Release, from src/native or dist/native alike. */
export const ADDON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/native/build/Release/rebound_native.node');

let loaded: { exports: Record<string, unknown> | undefined; error: string | undefined } | undefined;

function load(): NonNullable<typeof loaded> {
  if (!loaded) {
    try {
      loaded = { exports: createRequire(import.meta.url)(ADDON_PATH) as Record<string, unknown>, error: undefined };
    } catch (err) {
      loaded = { exports: undefined, error: (err as Error).message };
    }
  }
  return loaded;
}

/** The addon's functions named `names`, or undefined when the addon (or one of them) is missing. */
export function addonFunctions<T>(...names: string[]): T | undefined {
  const m = load().exports;
  return m && names.every((n) => typeof m[n] === 'function') ? (m as T) : undefined;
}

/** Why the addon is unavailable (for a log line), or undefined when it loaded. */
export function addonError(): string | undefined {
  return load().error;
}
