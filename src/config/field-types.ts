/**
 * The kinds of value a config field holds. Each kind parses what a user writes, wherever it is
 * written: a JSON value in config.json (numbers, booleans, arrays) or a string from a flag or the
 * environment. Sizes go through the one size parser (`64K`, `4M`, `1G`), so every source takes
 * suffixes. A kind also says how to write a value (defaults in docs and `--help`) and its unit.
 *
 * Parsers throw a ReboundError saying what is wrong with the value; the caller adds which setting
 * and where it came from.
 */
import net from 'node:net';
import path from 'node:path';
import { ReboundError } from '../errors.js';
import { parseTcpAddress } from '../util/address.js';
import { parseClientRule } from '../util/client-filter.js';
import { formatSizeExact, parseSize } from '../util/size.js';

export interface FieldType<T> {
  /** 'value' takes an argument, 'switch' is a boolean flag, 'list' a repeatable flag / JSON array. */
  readonly kind: 'value' | 'switch' | 'list';
  /** What a value looks like, for `--help` and docs: SIZE, N, HOST:PORT, DIR. */
  readonly placeholder: string;
  /** Unit of a number, for `--help`: 'bytes', 'bytes/s', 'ms'. */
  readonly unit?: string;
  /** Unit and accepted forms, for docs: 'bytes; 4096, 64K, 4M, 1G (powers of 1024)'. */
  readonly syntax: string;
  /** The only values allowed, for enumerations (commander checks them on the command line). */
  readonly choices?: readonly string[];
  parse(value: unknown): T;
  /** Writes a value the way a user would; for single values `parse(format(v))` gives `v` back. */
  format(value: T): string;
  /** Makes a relative path absolute; only kinds that hold paths have it. */
  resolve?(value: T, cwd: string): T;
}

const invalid = (why: string): ReboundError => new ReboundError('ERR_INVALID_ARGUMENT', why);

/** A size or rate in bytes (or bytes/s): a whole number or a number with a suffix K, M, G, T. */
export function sizeType(unit: 'bytes' | 'bytes/s', min = 0): FieldType<number> {
  return {
    kind: 'value',
    placeholder: 'SIZE',
    unit,
    syntax: `${unit}; 4096, 64K, 4M, 1G (powers of 1024)${min > 0 ? `; at least ${formatSizeExact(min)}` : ''}`,
    parse(value) {
      if (typeof value !== 'string' && typeof value !== 'number') throw invalid(`expected a size such as 4096, 64K, 4M or 1G, got ${JSON.stringify(value)}`);
      const bytes = parseSize(value);
      if (bytes < min) throw invalid(`expected at least ${formatSizeExact(min)}, got ${JSON.stringify(value)}`);
      return bytes;
    },
    format: formatSizeExact,
  };
}

/** A whole number in `unit` (no suffixes: a count is not a size). */
export function integerType(unit: string, opts: { min?: number; placeholder?: string } = {}): FieldType<number> {
  const min = opts.min ?? 0;
  return {
    kind: 'value',
    placeholder: opts.placeholder ?? 'N',
    unit,
    syntax: `${unit}; a whole number${min > 0 ? ` from ${min}` : ''}`,
    parse(value) {
      const n = typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min) {
        throw invalid(`expected a whole number${min > 0 ? ` from ${min}` : ''}, got ${JSON.stringify(value)}`);
      }
      return n;
    },
    format: String,
  };
}

const BOOLEAN_TEXT: Record<string, boolean> = { true: true, false: false, '1': true, '0': false };

export const booleanType: FieldType<boolean> = {
  kind: 'switch',
  placeholder: 'BOOL',
  syntax: 'true or false',
  parse(value) {
    const b = typeof value === 'string' ? BOOLEAN_TEXT[value.trim().toLowerCase()] : value;
    if (typeof b !== 'boolean') throw invalid(`expected true or false, got ${JSON.stringify(value)}`);
    return b;
  },
  format: String,
};

export function choiceType<T extends string>(placeholder: string, choices: readonly T[]): FieldType<T> {
  return {
    kind: 'value',
    placeholder,
    syntax: `one of ${choices.join(', ')}`,
    choices,
    parse(value) {
      if (!choices.includes(value as T)) throw invalid(`expected one of ${choices.join(', ')}, got ${JSON.stringify(value)}`);
      return value as T;
    },
    format: String,
  };
}

/** A non-empty string, checked by `check` (which throws on a bad value). */
export function textType(placeholder: string, syntax: string, check: (text: string) => void = () => {}): FieldType<string> {
  return {
    kind: 'value',
    placeholder,
    syntax,
    parse(value) {
      if (typeof value !== 'string' || value === '') throw invalid(`expected ${syntax}, got ${JSON.stringify(value)}`);
      check(value);
      return value;
    },
    format: String,
  };
}

/** A file-system path, made absolute against the working directory; with `off`, also the word 'off'. */
export function pathType(placeholder: string, opts: { off?: boolean } = {}): FieldType<string> {
  const type = textType(placeholder, opts.off ? "a path, or 'off'" : 'a path');
  return { ...type, resolve: (value, cwd) => (opts.off && value === 'off' ? value : path.resolve(cwd, value)) };
}

/** A TCP listen address: HOST:PORT, [IPv6]:PORT or PORT; with `off`, also the word 'off'. */
export function addressType(opts: { off?: boolean; placeholder?: string } = {}): FieldType<string> {
  const syntax = `HOST:PORT, [IPv6]:PORT or PORT${opts.off ? ", or 'off'" : ''}`;
  const type = textType(opts.placeholder ?? 'HOST:PORT', syntax, (text) => {
    if (!(opts.off && text === 'off')) parseTcpAddress(text);
  });
  // config.json may give a bare port as a number ("portmap": 111).
  return { ...type, parse: (value) => type.parse(typeof value === 'number' ? String(value) : value) };
}

/**
 * A client allowed to mount the NFS datastore: an IP address, a subnet ADDR/BITS, or '*' (all).
 * The syntax is util/client-filter.ts's, which the NFS export policy also builds its list with.
 */
export const nfsClientType: FieldType<string> = textType('ADDR', "an IP address, a subnet ADDR/BITS, or '*'", (text) => {
  try {
    parseClientRule(text);
  } catch (err) {
    throw invalid((err as Error).message);
  }
});

/**
 * A list of `item` values (a JSON array; on the command line a repeatable flag). With `none`, the
 * entry 'none' stands for no entries, so `--nbd none` turns the default listener off.
 */
export function listType(item: FieldType<string>, opts: { none?: boolean } = {}): FieldType<string[]> {
  return {
    kind: 'list',
    placeholder: item.placeholder,
    syntax: `a list of ${item.syntax}${opts.none ? "; 'none' for none" : ''}`,
    parse(value) {
      if (!Array.isArray(value)) throw invalid(`expected a list of ${item.syntax}, got ${JSON.stringify(value)}`);
      return value.filter((v) => !(opts.none && v === 'none')).map((v) => item.parse(v));
    },
    format: (value) => (value.length === 0 ? '[]' : value.join(' ')),
    ...(item.resolve ? { resolve: (value: string[], cwd: string) => value.map((v) => item.resolve!(v, cwd)) } : {}),
  };
}
