/**
 * docs/config.md, rendered from the schema. test/unit/config/docs.test.ts compares the file with
 * this rendering, so the two cannot drift; `npx vitest run test/unit/config/docs.test.ts -u`
 * rewrites the file after a schema change.
 */
import { CONFIG_KEYS, configField, envName, flagOf, type ConfigKey } from './fields.js';

/** The config.json shown in the docs; the docs test validates it against the schema. */
export const CONFIG_EXAMPLE = {
  nbd: ['0.0.0.0:10809'],
  http: '127.0.0.1:10810',
  exports: ['vm1=/backups/vm1.raw,cow,quota=20G,desc=vm1 nightly'],
  cacheSize: '1G',
  qosBandwidth: '200M',
  qosIops: 5000,
  nfs: ['0.0.0.0:2049'],
  nfsClients: ['10.0.0.0/24'],
};

export function renderConfigDoc(): string {
  return [
    '# Configuration of `rebound serve`',
    '',
    '<!-- Generated from src/config/fields.ts by src/config/docs.ts; do not edit by hand.',
    '     After a schema change: npx vitest run test/unit/config/docs.test.ts -u -->',
    '',
    'Every setting comes from one schema (`src/config/fields.ts`), which also gives the defaults, the',
    'validation and `rebound serve --help`. Sources, later ones winning:',
    '',
    '1. the defaults below;',
    '2. `DATA/config.json`: a JSON object with the keys below (lists are JSON arrays; unknown keys are refused);',
    '3. environment variables `REBOUND_*` (every setting that is not a list);',
    '4. command-line flags of `rebound serve`.',
    '',
    'The data directory DATA itself comes from `--data`, `REBOUND_DATA` or the default, since config.json',
    'lives in it. `exports` add up: flags add exports to those of config.json. A repeatable flag replaces',
    "the list of config.json otherwise; `--nbd none` turns the default NBD listener off.",
    '',
    'Sizes and rates (SIZE) take a whole number of bytes or a number with a suffix K, M, G, T or P',
    '(powers of 1024, as in qemu-img): `4096`, `64K`, `4M`, `1.5G`. In config.json either a number',
    '(`268435456`) or a string (`"256M"`). Switches take `true` or `false` (`1`/`0` in the environment).',
    '',
    '`rebound serve --print-config` prints the settings it would run with; `rebound config` those of the',
    'running daemon. Both print the keys below, so their output can be pasted into config.json.',
    '',
    '```json',
    jsonLines(CONFIG_EXAMPLE),
    '```',
    '',
    '| key | flag | default | unit or value |',
    '|---|---|---|---|',
    ...CONFIG_KEYS.map(summaryRow),
    '',
    ...CONFIG_KEYS.flatMap(section),
  ].join('\n');
}

function defaultText(key: ConfigKey): string {
  const { type, default: def } = configField(key);
  return type.format(def);
}

function flagText(key: ConfigKey): string {
  const { type } = configField(key);
  return type.kind === 'switch' ? flagOf(key) : `${flagOf(key)} ${type.placeholder}`;
}

/** JSON with one setting a line, as people write config.json. */
function jsonLines(obj: Record<string, unknown>): string {
  return `{\n${Object.entries(obj).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(',\n')}\n}`;
}

function summaryRow(key: ConfigKey): string {
  const { type } = configField(key);
  return `| [\`${key}\`](#${key.toLowerCase()}) | \`${flagText(key)}\` | \`${defaultText(key)}\` | ${type.unit ?? type.placeholder} |`;
}

function section(key: ConfigKey): string[] {
  const { type, doc, accumulate, inConfigFile } = configField(key);
  const env = envName(key);
  return [
    `## ${key}`,
    '',
    doc,
    '',
    `- value: ${type.syntax}`,
    `- default: \`${defaultText(key)}\``,
    `- config.json: ${inConfigFile === false ? 'ignored' : `\`"${key}"\``}`,
    `- flag: \`${flagText(key)}\`${type.kind === 'list' ? ` (repeatable${accumulate ? '; adds to config.json' : ''})` : ''}`,
    `- environment: ${env ? `\`${env}\`` : 'none (a list)'}`,
    '',
  ];
}
