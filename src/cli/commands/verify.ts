/**
 * `rebound verify`: without --boot, re-hash the chunks of the selected restore points (repo/verify.ts);
 * with --boot, boot one restore point in a throwaway QEMU and judge whether it came up
 * (docs/verification.md). Both follow the daemon's job; a failed verification exits 1.
 */
import { Command } from 'commander';
import path from 'node:path';
import type { JobInfo } from '../../api/jobs.js';
import { ReboundError } from '../../errors.js';
import type { VerifyReport } from '../../repo/verify.js';
import { formatSize, parseSize } from '../../util/size.js';
import type { BootVerification } from '../../verify/result.js';
import { apiClient } from '../api.js';
import type { CliIo } from '../io.js';
import { followJob } from '../jobs.js';
import { parsePointRef } from './repo.js';

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

interface VerifyOpts {
  json?: boolean;
  boot?: boolean;
  timeout?: string;
  memory?: string;
  expectSerial?: string;
  tcp?: string[];
  tcpGrace?: string;
  script?: string;
  agent?: boolean;
  screen?: boolean;
  keepScreenshot?: boolean;
}

export function registerVerify(program: Command, io: CliIo): void {
  program
    .command('verify')
    .description(
      're-read and re-hash every chunk the selected restore points use (report bad chunks with every point they break); ' +
        'with --boot, boot one restore point in a throwaway QEMU and check that it comes up',
    )
    .argument('[vm@point]', 'VM, or VM@POINT; default: the whole repository (--boot: VM[@POINT], POINT defaults to latest)')
    .option('--boot', 'boot the point (an ephemeral overlay, discarded afterwards) and judge the signals below')
    .option('--timeout <seconds>', '--boot: fail when the signals are not all in after this long (default: the daemon\'s verifyTimeoutSeconds)')
    .option('--memory <size>', '--boot: guest memory, e.g. 512M (default: the VM configuration stored with the backup, else 1G)')
    .option('--expect-serial <regex>', '--boot: the serial console must show a line matching this')
    .option('--tcp <port>', '--boot: this guest TCP port must answer (forwarded to 127.0.0.1 on the gateway); repeatable', collect)
    .option('--tcp-grace <seconds>', '--boot, with --expect-serial: the --tcp ports must answer within this long of the serial match (default: by the timeout)')
    .option('--script <file>', '--boot: run this probe script on the gateway once the other signals are in; it must exit 0 (admin token; file in verifyScriptDirs)')
    .option('--agent', '--boot: require an answer of qemu-guest-agent (guest-ping)')
    .option('--no-screen', '--boot: do not judge the screen (by default it must not be blank or one flat colour)')
    .option('--keep-screenshot', '--boot: keep the final screenshot (PNG) with the result even when the point booted')
    .option('--json', 'print the report (or the boot verification) as JSON')
    .action(async (ref: string | undefined, opts: VerifyOpts, cmd: Command) => {
      const client = apiClient(cmd, io);
      if (!opts.boot) {
        const target = ref ? (ref.includes('@') ? parsePointRef(ref) : { vm: ref }) : {};
        const job = await followJob(client, await client.post<JobInfo>('/v1/verify', target), io, { total: 'total', done: 'done' });
        return printChunkReport(job.result as VerifyReport, opts, io);
      }
      if (!ref) throw new ReboundError('ERR_INVALID_ARGUMENT', 'verify --boot needs VM[@POINT]');
      const { vm, point } = parsePointRef(ref);
      const body: Record<string, unknown> = { vm, point };
      if (opts.timeout !== undefined) body.timeoutSeconds = wholeNumber(opts.timeout, '--timeout');
      if (opts.memory !== undefined) body.memory = parseSize(opts.memory);
      if (opts.expectSerial !== undefined) body.expectSerial = opts.expectSerial;
      if (opts.tcp?.length) body.tcp = opts.tcp.map((p) => wholeNumber(p, '--tcp'));
      if (opts.tcpGrace !== undefined) body.tcpGraceSeconds = wholeNumber(opts.tcpGrace, '--tcp-grace');
      if (opts.script !== undefined) body.script = path.resolve(io.cwd, opts.script);
      if (opts.agent) body.agent = true;
      if (opts.screen === false) body.screen = false;
      if (opts.keepScreenshot) body.keepScreenshot = true;
      const job = await followJob(client, await client.post<JobInfo>('/v1/boot-verifications', body), io);
      const r = job.result as BootVerification;
      if (opts.json) io.stdout(JSON.stringify(r, null, 2) + '\n');
      else printBootResult(r, io);
      if (!r.ok) throw new ReboundError('ERR_VERIFY_FAILED', `${r.vm}@${r.point} did not boot: ${r.reasons.join('; ')}`);
    });
}

function wholeNumber(text: string, flag: string): number {
  if (!/^\d+$/.test(text)) throw new ReboundError('ERR_INVALID_ARGUMENT', `${flag} needs a whole number, got '${text}'`);
  return Number(text);
}

function printChunkReport(r: VerifyReport, opts: VerifyOpts, io: CliIo): void {
  if (opts.json) io.stdout(JSON.stringify(r, null, 2) + '\n');
  else {
    io.stdout(`${r.ok ? 'OK' : 'DAMAGED'}: ${r.points} restore point(s), ${r.chunks} chunks, ${formatSize(r.bytes)} verified in ${(r.durationMs / 1000).toFixed(1)} s\n`);
    for (const p of r.problems) {
      io.stdout(`  chunk ${p.chunk}: ${p.error} (${p.message})\n`);
      for (const a of p.affected) io.stdout(`    breaks ${a.vm}@${a.point} disk ${a.disk} (chunk ${a.chunkIndexes.join(', ')})\n`);
    }
    for (const p of r.indexProblems) io.stdout(`  index of ${JSON.stringify(p)}\n`);
  }
  if (!r.ok) throw new ReboundError('ERR_CHUNK_CORRUPT', `verify found ${r.problems.length} bad chunk(s)`);
}

/** One line for listings: "booted 2026-12-06T21:00:00Z" or "FAILED ...". */
export function verificationSummary(r: BootVerification | undefined): string {
  if (!r) return '-';
  return `${r.ok ? 'booted' : 'FAILED'} ${r.finishedAt.replace(/\.\d+Z$/, 'Z')}`;
}

export function printBootResult(r: BootVerification, io: CliIo): void {
  const s = r.signals;
  io.stdout(`${r.ok ? 'BOOTED' : 'FAILED'}: ${r.vm}@${r.point} in ${(r.durationMs / 1000).toFixed(1)} s (verification ${r.id})\n`);
  for (const why of r.reasons) io.stdout(`  reason: ${why}\n`);
  const m = r.machine;
  io.stdout(`  machine: ${m.machine}, ${m.firmware}, ${m.bus} disks, ${m.nic}, ${m.memoryMiB} MiB, ${m.accel}` + `${m.configFile ? ` (from ${m.configFile})` : ' (no VM configuration stored)'}${m.guessed.length ? `; guessed: ${m.guessed.join(', ')}` : ''}\n`);
  if (s.serial.pattern) io.stdout(`  serial /${s.serial.pattern}/: ${s.serial.matched ? `matched "${s.serial.matched}"` : 'not seen'}\n`);
  if (s.serial.failure) io.stdout(`  serial failure: ${s.serial.failure}\n`);
  for (const t of s.tcp) io.stdout(`  tcp ${t.port}: ${t.answered ? 'answered' : `no answer (${t.last})`}\n`);
  io.stdout(`  guest agent: ${s.agent.answered ? 'answered' : 'no answer'}${s.agent.required ? ' (required)' : ''}\n`);
  if (s.script) io.stdout(`  script ${s.script.file}: ${s.script.signal ? `killed (${s.script.signal})` : `exit ${s.script.exitCode}`}\n`);
  if (s.screen) io.stdout(`  screen ${s.screen.width}x${s.screen.height}: ${s.screen.ok ? 'has content' : s.screen.reason}${s.screen.required ? '' : ' (not judged)'}\n`);
  if (r.screenshot) io.stdout(`  screenshot: GET /v1/vms/${encodeURIComponent(r.vm)}/points/${r.point}/boot-verifications/${r.id}/screenshot\n`);
  if (!r.ok && r.serialTail.length) io.stdout(`  serial tail:\n${r.serialTail.slice(-15).map((l) => `    | ${l}\n`).join('')}`);
}
