/**
 * The settings as `rebound serve` flags: one commander option per schema field, with the field's
 * unit and default in its help, and the way back from parsed flags to a config layer. Commander
 * only collects strings (and checks enumerations); values are parsed by the schema, like those
 * of config.json and the environment. Commander's own defaults are not used: a flag that is not
 * given must not hide config.json.
 */
import { Option, type Command } from 'commander';
import { CONFIG_KEYS, configField, envName, flagOf, type ConfigKey } from './fields.js';
import type { ConfigInput, ConfigLayer } from './schema.js';

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** Adds the settings' flags to `command`; the returned function reads those given on the command line. */
export function addConfigOptions(command: Command): () => ConfigLayer {
  const keyOf = new Map<string, ConfigKey>();
  for (const key of CONFIG_KEYS) {
    const option = configOption(key);
    keyOf.set(option.attributeName(), key);
    command.addOption(option);
  }
  return () => {
    const values: ConfigInput = {};
    for (const [attribute, key] of keyOf) {
      if (command.getOptionValueSource(attribute) === 'cli') values[key] = command.getOptionValue(attribute);
    }
    return { values, origin: flagOf };
  };
}

/** `--cache-size <size>`; a switch that is on by default becomes `--no-export-points`. */
export function configOption(key: ConfigKey): Option {
  const { type } = configField(key);
  const flags = type.kind === 'switch' ? flagOf(key) : `${flagOf(key)} <${type.placeholder.toLowerCase()}>`;
  const option = new Option(flags, optionHelp(key));
  if (type.kind === 'list') option.argParser(collect);
  if (type.choices) option.choices(type.choices);
  return option;
}

/** The field's doc as commander likes it (lower case, no final period), then unit, default and names. */
function optionHelp(key: ConfigKey): string {
  const { type, doc, default: def, inConfigFile } = configField(key);
  const env = envName(key);
  const facts = [
    type.unit,
    type.kind === 'list' ? 'repeatable' : undefined,
    `default ${type.format(def)}`,
    inConfigFile === false ? undefined : `config.json ${key}`,
    env ? `env ${env}` : undefined,
  ].filter((f) => f !== undefined);
  let text = doc.charAt(0).toLowerCase() + doc.slice(1).replace(/\.$/, '');
  if (type.kind === 'switch' && def === true) text = `do not ${text}`;
  return `${text} (${facts.join('; ')})`;
}
