/**
 * Parses `--export NAME=SOURCE[,OPTION[=VALUE]...]`.
 *
 *   SOURCE   a path to a raw image file or block device (exported read-only), or
 *            `memory:SIZE` for a volatile writable scratch device (testing clients).
 *   OPTIONS  `desc=TEXT`: description shown by `nbdinfo --list` and `qemu-nbd -L`; it must come
 *            last and takes the rest of the spec, commas included.
 */
import path from 'node:path';
import { ReboundError } from '../errors.js';
import { parseSize } from '../util/size.js';

export type ExportSource = { kind: 'file'; path: string } | { kind: 'memory'; size: number };

export interface ExportSpec {
  name: string;
  source: ExportSource;
  description?: string;
  /** The text it was parsed from, for messages. */
  text: string;
}

export const EXPORT_OPTIONS: Record<string, string> = {
  desc: 'desc=TEXT  description shown to NBD clients (nbdinfo --list, qemu-nbd -L); last, may contain commas',
};

export function parseExportSpec(text: string, cwd = process.cwd()): ExportSpec {
  const bad = (why: string): ReboundError =>
    new ReboundError('ERR_INVALID_EXPORT_SPEC', `invalid --export '${text}': ${why}`);
  const eq = text.indexOf('=');
  if (eq <= 0) throw bad('expected NAME=SOURCE[,OPTION...]');
  const name = text.slice(0, eq);
  let rest = text.slice(eq + 1);
  let description: string | undefined;
  const descAt = rest.search(/(^|,)desc=/);
  if (descAt >= 0) {
    description = rest.slice(rest.indexOf('desc=', descAt) + 'desc='.length);
    rest = rest.slice(0, descAt);
  }
  const [sourceText, ...options] = rest.split(',');
  if (!sourceText) throw bad('missing SOURCE after NAME=');

  let source: ExportSource;
  if (sourceText.startsWith('memory:')) {
    try {
      source = { kind: 'memory', size: parseSize(sourceText.slice('memory:'.length)) };
    } catch (err) {
      throw bad((err as Error).message);
    }
  } else {
    source = { kind: 'file', path: path.resolve(cwd, sourceText) };
  }

  const spec: ExportSpec = { name, source, text };
  if (description !== undefined) spec.description = description;
  for (const opt of options) {
    const key = opt.split('=')[0]!;
    throw bad(`unknown option '${key}' (known: ${Object.keys(EXPORT_OPTIONS).join(', ')})`);
  }
  return spec;
}
