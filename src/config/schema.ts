/**
 * The daemon's configuration, resolved from its sources by the one schema in fields.ts. Sources,
 * later ones winning: defaults, `<data>/config.json`, environment (REBOUND_*), command-line flags.
 * The data directory comes from flags, environment or default only, since config.json lives in it.
 *
 * Every value is parsed by its field's kind where it enters (so an error names the setting and
 * where it came from), then the whole is validated once: paths made absolute, export specs
 * parsed, export names unique.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isReboundError, ReboundError } from '../errors.js';
import { parseExportSpec, type ExportSpec } from './export-spec.js';
import { CONFIG_KEYS, configField, envName, type ConfigKey, type DaemonConfig } from './fields.js';

export { CONFIG_KEYS, CONFIG_SCHEMA, DEFAULT_HTTP_PORT, DEFAULT_NBD_PORT, envName, flagName, flagOf } from './fields.js';
export type { ConfigField, ConfigKey, DaemonConfig } from './fields.js';

/** Settings as a source gives them: JSON values or strings, not yet parsed. */
export type ConfigInput = { [K in ConfigKey]?: unknown };

/** One source of settings. */
export interface ConfigLayer {
  values: ConfigInput;
  /** Where a setting came from, for error messages: '--cache-size', 'REBOUND_CACHE_SIZE', a file. */
  origin?: (key: ConfigKey) => string;
}

export interface ValidatedConfig extends DaemonConfig {
  exportSpecs: ExportSpec[];
}

/** The defaults, with the environment's settings (REBOUND_DATA, REBOUND_CACHE_SIZE, ...) applied. */
export function defaultConfig(env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  return mergeConfig([envLayer(env)]);
}

/** Parses each layer's settings and lays them over the defaults; `exports` accumulate. */
export function mergeConfig(layers: readonly ConfigLayer[]): DaemonConfig {
  const merged: Record<string, unknown> = {};
  for (const key of CONFIG_KEYS) {
    const d = configField(key).default;
    merged[key] = Array.isArray(d) ? [...d] : d;
  }
  for (const layer of layers) {
    for (const key of CONFIG_KEYS) {
      const raw = layer.values[key];
      if (raw === undefined) continue;
      const value = parseSetting(key, raw, layer.origin?.(key));
      merged[key] = configField(key).accumulate ? [...(merged[key] as unknown[]), ...(value as unknown[])] : value;
    }
  }
  return merged as DaemonConfig;
}

function parseSetting(key: ConfigKey, raw: unknown, origin: string | undefined): unknown {
  try {
    return configField(key).type.parse(raw);
  } catch (err) {
    if (!isReboundError(err)) throw err;
    throw new ReboundError(err.code, `invalid setting ${key}${origin ? ` (${origin})` : ''}: ${err.message}`, { cause: err });
  }
}

/**
 * Checks every setting and what involves several; makes paths absolute against `cwd`. Missing
 * settings take their defaults. Throws a ReboundError naming the setting.
 */
export function validateConfig(input: ConfigInput, cwd = process.cwd()): ValidatedConfig {
  const config = mergeConfig([{ values: input }]);
  const resolved: Record<string, unknown> = { ...config };
  for (const key of CONFIG_KEYS) {
    const { resolve } = configField(key).type;
    if (resolve) resolved[key] = resolve(config[key], cwd);
  }
  const exportSpecs = config.exports.map((e) => parseExportSpec(e, cwd));
  const names = new Set<string>();
  for (const s of exportSpecs) {
    if (names.has(s.name)) throw new ReboundError('ERR_INVALID_ARGUMENT', `invalid setting exports: export name '${s.name}' is given twice`);
    names.add(s.name);
  }
  return { ...(resolved as DaemonConfig), exportSpecs };
}

/** The settings `serve` runs with: defaults, DATA/config.json, environment, then `flags`. */
export function loadConfig(flags: ConfigLayer, env: NodeJS.ProcessEnv, cwd: string): DaemonConfig {
  const envSettings = envLayer(env);
  const dataDir = path.resolve(cwd, mergeConfig([envSettings, flags]).dataDir);
  return mergeConfig([configFileLayer(dataDir), envSettings, flags]);
}

/** The settings given by REBOUND_* environment variables (empty ones are ignored). */
export function envLayer(env: NodeJS.ProcessEnv): ConfigLayer {
  const values: ConfigInput = {};
  for (const key of CONFIG_KEYS) {
    const name = envName(key);
    const value = name === undefined ? undefined : env[name];
    if (value) values[key] = value;
  }
  return { values, origin: (key) => envName(key)! };
}

export function configFileLayer(dataDir: string): ConfigLayer {
  const file = path.join(dataDir, 'config.json');
  return { values: readConfigFile(dataDir), origin: () => file };
}

/**
 * Reads `<dataDir>/config.json` if present: a JSON object of schema keys (unknown keys are
 * refused); values are parsed later, by mergeConfig. Keys config.json cannot set (dataDir: the
 * file's own directory is the data directory) are dropped, so `rebound config` output, which has
 * them, may be pasted in.
 */
export function readConfigFile(dataDir: string): ConfigInput {
  const file = path.join(dataDir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return {};
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `${file}: not valid JSON: ${(err as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `${file}: expected a JSON object`);
  }
  const known = new Set<string>(CONFIG_KEYS);
  for (const key of Object.keys(obj)) {
    if (!known.has(key)) throw new ReboundError('ERR_INVALID_ARGUMENT', `${file}: unknown setting '${key}'`);
  }
  const values: ConfigInput = {};
  for (const [key, value] of Object.entries(obj) as [ConfigKey, unknown][]) {
    if (configField(key).inConfigFile !== false) values[key] = value;
  }
  return values;
}

/** The settings alone, in schema order: what `--print-config` and `rebound config` show. */
export function plainConfig(config: DaemonConfig): DaemonConfig {
  return Object.fromEntries(CONFIG_KEYS.map((key) => [key, config[key]])) as DaemonConfig;
}
