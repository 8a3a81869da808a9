/**
 * Parses `--export NAME=SOURCE[,OPTION[=VALUE]...]`.
 *
 *   SOURCE   a path to a raw image file or block device (exported read-only),
 *            `repo:VM[@POINT]/DISK` for a disk of a restore point (POINT: an id or latest), or
 *            `memory:SIZE` for a volatile writable scratch device (testing clients).
 *   OPTIONS  `cow` or `cow=DIR`: writable; writes land in a persistent copy-on-write overlay
 *            (default DATA/overlays/NAME) and the source is never written.
 *            `quota=SIZE`: most data the overlay may hold (writes past it fail with ENOSPC).
 *            `cow-block-size=SIZE`: block size of a new overlay (default 4K).
 *            `desc=TEXT`: description shown by `nbdinfo --list` and `qemu-nbd -L`; it must come
 *            last and takes the rest of the spec, commas included.
 */
import path from 'node:path';
import { ReboundError } from '../errors.js';
import { parseSize } from '../util/size.js';

export type ExportSource =
  | { kind: 'file'; path: string }
  | { kind: 'memory'; size: number }
  /** A disk of a restore point in the repository: repo:VM[@POINT]/DISK (POINT defaults to latest). */
  | { kind: 'repo'; vm: string; point: string; disk: string };

export interface CowSpec {
  /** Overlay directory; undefined = the default under the data directory. */
  dir?: string;
  quota?: number;
  blockSize?: number;
}

export interface ExportSpec {
  name: string;
  source: ExportSource;
  cow?: CowSpec;
  description?: string;
  /** The text it was parsed from, for messages. */
  text: string;
}

export const EXPORT_OPTIONS: Record<string, string> = {
  cow: 'cow[=DIR]  writable through a persistent copy-on-write overlay (default DIR: DATA/overlays/NAME)',
  quota: 'quota=SIZE  most data the overlay may hold; writes beyond fail with ENOSPC',
  'cow-block-size': 'cow-block-size=SIZE  block size of a new overlay (default 4K)',
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
  const repoSource = /^repo:([^@/]+)(?:@([^/]+))?\/(.+)$/.exec(sourceText);
  if (sourceText.startsWith('repo:')) {
    if (!repoSource) throw bad('a repository source is repo:VM[@POINT]/DISK');
    source = { kind: 'repo', vm: repoSource[1]!, point: repoSource[2] ?? 'latest', disk: repoSource[3]! };
  } else if (sourceText.startsWith('memory:')) {
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
    const eqAt = opt.indexOf('=');
    const key = eqAt < 0 ? opt : opt.slice(0, eqAt);
    const value = eqAt < 0 ? undefined : opt.slice(eqAt + 1);
    const size = (): number => {
      if (!value) throw bad(`${key} needs a value: ${key}=SIZE`);
      try {
        return parseSize(value);
      } catch (err) {
        throw bad((err as Error).message);
      }
    };
    switch (key) {
      case 'cow':
        spec.cow = { ...spec.cow, ...(value ? { dir: path.resolve(cwd, value) } : {}) };
        break;
      case 'quota':
        spec.cow = { ...spec.cow, quota: size() };
        break;
      case 'cow-block-size': {
        const bs = size();
        if (bs < 512 || bs > 1024 * 1024 || (bs & (bs - 1)) !== 0) throw bad('cow-block-size must be a power of two from 512 to 1M');
        spec.cow = { ...spec.cow, blockSize: bs };
        break;
      }
      default:
        throw bad(`unknown option '${key}' (known: ${Object.keys(EXPORT_OPTIONS).join(', ')})`);
    }
  }
  if (spec.cow && !options.includes('cow') && !options.some((o) => o.startsWith('cow='))) {
    throw bad('quota and cow-block-size need the cow option');
  }
  if (spec.cow && spec.source.kind === 'memory') throw bad('memory exports are writable already; cow is for image files');
  return spec;
}
