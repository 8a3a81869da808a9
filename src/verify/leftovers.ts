/**
 * Run directories of verification boots in progress: DATA/verify/runs/ID/ holds the overlays, the
 * sockets and run.json (which VM and point, QEMU's pid). The record is written before QEMU starts
 * and again with its pid, so a daemon killed mid-verification (kill -9) leaves enough behind for
 * the next start to undo it: `cleanLeftovers` kills the QEMU that is still running (only if
 * /proc/PID/cmdline names this run's directory: a pid reused by another program is left alone),
 * and removes the directory with its overlays. The point's pin lived in the dead daemon's memory
 * (repository pins are not persistent), so nothing else holds the point afterwards.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileDurableAsync } from '../util/durable-file.js';
import type { Logger } from '../util/log.js';
import { errorText } from '../errors.js';

export interface RunRecord {
  id: string;
  vm: string;
  point: string;
  startedAt: string;
  qemuPid: number | null;
}

export const runsDir = (dataDir: string): string => path.join(dataDir, 'verify', 'runs');

export async function saveRunRecord(dir: string, r: RunRecord): Promise<void> {
  await writeFileDurableAsync(path.join(dir, 'run.json'), JSON.stringify(r) + '\n');
}

/** Whether `pid` is a process whose command line names `dir` (the run's QEMU). */
export function isRunProcess(pid: number, dir: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(dir);
  } catch {
    return false;
  }
}

/** Ends what verification boots of an earlier daemon left: returns what was cleaned. */
export async function cleanLeftovers(dataDir: string, log: Logger): Promise<Array<{ id: string; vm?: string; point?: string; killed: number | null }>> {
  const root = runsDir(dataDir);
  const cleaned: Array<{ id: string; vm?: string; point?: string; killed: number | null }> = [];
  for (const id of await fs.promises.readdir(root).catch(() => [] as string[])) {
    const dir = path.join(root, id);
    let rec: Partial<RunRecord> = {};
    try {
      rec = JSON.parse(await fs.promises.readFile(path.join(dir, 'run.json'), 'utf8')) as RunRecord;
    } catch {
      // no record yet: QEMU was not started (its pid file may still say otherwise)
    }
    const pids = new Set<number>();
    if (rec.qemuPid) pids.add(rec.qemuPid);
    const fromFile = Number((await fs.promises.readFile(path.join(dir, 'qemu.pid'), 'utf8').catch(() => '')).trim());
    if (fromFile > 0) pids.add(fromFile);
    let killed: number | null = null;
    for (const pid of pids) {
      if (!isRunProcess(pid, dir)) continue;
      try {
        process.kill(pid, 'SIGKILL');
        killed = pid;
      } catch (err) {
        log.warn('cannot stop a leftover verification QEMU', { pid, err: errorText(err) });
      }
      for (let i = 0; i < 200 && fs.existsSync(`/proc/${pid}`) && isRunProcess(pid, dir); i++) await new Promise((r) => setTimeout(r, 25));
    }
    await fs.promises.rm(dir, { recursive: true, force: true });
    cleaned.push({ id, vm: rec.vm, point: rec.point, killed });
    log.warn('cleaned up an interrupted verification boot', { run: id, vm: rec.vm, point: rec.point, qemuKilled: killed });
  }
  return cleaned;
}
