/**
 * A boot verification's result (what is stored, listed and sent to clients) and where results
 * live: DATA/verify/results/VM/POINT/ID.json with the screenshot beside it (ID.png). They are
 * kept per restore point, outside the repository's files (the repository's format stays the
 * backup's; a point pruned later leaves its results until `prunePoint`). Written durably (temp
 * file, fsync, rename); a damaged file is skipped when listing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileDurableAsync } from '../util/durable-file.js';
import type { ScreenVerdict } from './screen.js';
import type { BootConfig } from './vm-config.js';

export const RESULT_FORMAT = 'rebound-boot-verification';
export const RESULT_VERSION = 1;

export type VerifyTrigger = 'request' | 'after-backup' | 'schedule';

export interface BootVerification {
  format: typeof RESULT_FORMAT;
  version: number;
  id: string;
  vm: string;
  point: string;
  trigger: VerifyTrigger;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  /** Booted: every required signal was seen. */
  ok: boolean;
  verdict: 'booted' | 'failed';
  /** Why not (empty when booted). */
  reasons: string[];
  timeoutSeconds: number;
  signals: {
    /** atMs: after the guest started running (QEMU's `cont`), ms. */
    serial: { pattern: string | null; matched: string | null; atMs: number | null; failure: string | null };
    tcp: Array<{ port: number; hostPort: number; answered: boolean; last: string; atMs: number | null }>;
    agent: { required: boolean; answered: boolean };
    script: { file: string; exitCode: number | null; signal: string | null; output: string[] } | null;
    screen: (ScreenVerdict & { required: boolean }) | null;
  };
  /**
   * Where the time went: from the start to the guest running (pin, overlays, NBD, QEMU start),
   * from there to every required signal (null: not all came), from there to the verdict (script,
   * screenshot).
   */
  timings: { prepareMs: number; signalsMs: number | null; finishMs: number };
  serialTail: string[];
  /** The PNG's file name beside the result, or null when not kept. */
  screenshot: string | null;
  machine: Omit<BootConfig, 'memoryMiB'> & { accel: string; memoryMiB: number; configFile: string | null };
  qemu: { pid: number | null; startedAt: string | null; exitedAt: string | null; exit: string | null };
}

export function resultsDir(dataDir: string): string {
  return path.join(dataDir, 'verify', 'results');
}

/** A name as one path component: encoded, and never `.` or `..` (which encoding leaves alone). */
const component = (name: string): string => (name === '.' || name === '..' ? encodeURIComponent(name).replace(/\./g, '%2E') : encodeURIComponent(name));
const pointDir = (dataDir: string, vm: string, point: string): string => path.join(resultsDir(dataDir), component(vm), component(point));

export async function saveResult(dataDir: string, r: BootVerification, png: Buffer | null): Promise<void> {
  const dir = pointDir(dataDir, r.vm, r.point);
  await fs.promises.mkdir(dir, { recursive: true });
  if (png && r.screenshot) await writeFileDurableAsync(path.join(dir, r.screenshot), png);
  await writeFileDurableAsync(path.join(dir, `${r.id}.json`), JSON.stringify(r, null, 2) + '\n');
}

/** The results of one point, oldest first. */
export async function listResults(dataDir: string, vm: string, point: string): Promise<BootVerification[]> {
  const dir = pointDir(dataDir, vm, point);
  const names = await fs.promises.readdir(dir).catch(() => [] as string[]);
  const out: BootVerification[] = [];
  for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
    try {
      const r = JSON.parse(await fs.promises.readFile(path.join(dir, n), 'utf8')) as BootVerification;
      if (r.format === RESULT_FORMAT && r.version === RESULT_VERSION) out.push(r);
    } catch {
      // a damaged result is not listed
    }
  }
  return out.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : 0));
}

/** The newest result of each point of a VM that has one. */
export async function latestResults(dataDir: string, vm: string): Promise<Record<string, BootVerification>> {
  const dir = path.join(resultsDir(dataDir), component(vm));
  const out: Record<string, BootVerification> = {};
  for (const p of await fs.promises.readdir(dir).catch(() => [] as string[])) {
    const all = await listResults(dataDir, vm, decodeURIComponent(p));
    if (all.length) out[decodeURIComponent(p)] = all[all.length - 1]!;
  }
  return out;
}

/** The screenshot file of a result (null when the result has none). */
export function screenshotPath(dataDir: string, r: BootVerification): string | null {
  return r.screenshot ? path.join(pointDir(dataDir, r.vm, r.point), r.screenshot) : null;
}
