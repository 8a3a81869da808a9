/**
 * libiscsi's conformance suite (`iscsi-test-cu`, Debian libiscsi-bin) against the iSCSI target:
 * every ALL.* family on a writable recovery-session LUN, and every family that does not write on a
 * read-only restore-point LUN (the write families there are refused by design: DATA PROTECT, which
 * ALL.ReadOnly checks). The run must report no failed test and must not hang.
 *
 * Persistent reservations (ALL.Prin*, ALL.Prout*) run with two initiator names, so two I_T
 * nexuses meet the reservation; on the read-only LUN ALL.ProutReserve is left out (its holder
 * writes).
 *
 * Left out, with the reason (see the note of issue 13 for the SKIPPED list):
 *  - ALL.iSCSIdatasn: its DataSN==27 case writes one block and expects the target to see a bad
 *    Data-Out, but with ImmediateData=Yes the block travels as immediate data and no Data-Out exists
 *    (tgt fails the same case); the other cases (duplicate, -1, reversed DataSN) close the
 *    connection here as they must.
 *  - ALL.MultipathIO needs a second portal URL; it skips itself without one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { INITIATOR, startIscsi, type IscsiFixture } from '../helpers/iscsi-fixture.js';
import { missingPeers } from '../helpers/peers.js';
import { run } from '../helpers/run.js';

const missing = missingPeers('iscsi-test-cu');
const MiB = 1024 * 1024;
const EXCLUDED = new Set(['ALL.iSCSIdatasn']);
/** Families that write: on a read-only LUN they fail by design (ALL.ReadOnly checks the refusal). */
const WRITING = new Set([
  'ALL.CompareAndWrite',
  'ALL.ExtendedCopy',
  'ALL.OrWrite',
  'ALL.ProutReserve', // checks that the reservation holder can write
  // AbortTaskSimpleAsync aborts an UNMAP in flight: on a read-only LUN the UNMAP may be refused
  // (WRITE_PROTECTED) before the abort lands, which the test counts as a failure. Runs on the
  // session LUN, where the UNMAP is allowed.
  'ALL.iSCSITMF',
  'ALL.Write10',
  'ALL.Write12',
  'ALL.Write16',
  'ALL.WriteAtomic16',
  'ALL.WriteSame10',
  'ALL.WriteSame16',
  'ALL.WriteVerify10',
  'ALL.WriteVerify12',
  'ALL.WriteVerify16',
  'ALL.iSCSIResiduals',
  'ALL.Sanitize',
]);

let fx: IscsiFixture;
let families: string[] = [];

beforeAll(async () => {
  if (missing.length) return;
  fx = await startIscsi({ sizes: [64 * MiB, 16 * MiB], pointSize: 64 * MiB });
  const list = spawnSync('iscsi-test-cu', ['--list'], { encoding: 'utf8' }).stdout;
  families = list.split('\n').filter((l) => /^ALL\.[A-Za-z0-9]+$/.test(l.trim())).map((l) => l.trim());
});

afterAll(async () => {
  await fx?.close();
});

interface Summary {
  ran: number;
  passed: number;
  failed: number;
  skipped: string[];
  output: string;
}

async function testCu(url: string, tests: string[]): Promise<Summary> {
  const r = await run('iscsi-test-cu', ['-d', '-n', '-i', INITIATOR, '-I', `${INITIATOR}-2`, '-t', tests.join(','), url], { timeoutMs: 600_000 });
  const output = r.stdout + r.stderr;
  const m = /tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/.exec(output);
  if (!m) throw new Error(`iscsi-test-cu printed no summary (exit ${r.code}):\n${output.slice(-4000)}`);
  const skipped = [...new Set(output.split('\n').filter((l) => l.includes('[SKIPPED]')).map((l) => l.trim()))];
  return { ran: Number(m[2]), passed: Number(m[3]), failed: Number(m[4]), skipped, output };
}

const failures = (s: Summary): string => s.output.split('\n').filter((l) => /had failures|\[FAILED\]/.test(l)).slice(0, 40).join('\n');

describe.skipIf(missing.length > 0)('iscsi-test-cu conformance', () => {
  it('passes every family on a writable session LUN', async () => {
    const tests = families.filter((f) => !EXCLUDED.has(f));
    expect(tests.length).toBeGreaterThan(40);
    const s = await testCu(fx.url(fx.sessionIqn, 0), tests);
    expect(s.failed, failures(s)).toBe(0);
    expect(s.ran).toBeGreaterThan(200);
    // Persistent reservations run for real (two I_T nexuses: -i and -I), none skips itself.
    expect(s.skipped.filter((l) => /PERSISTEN|reservation/i.test(l))).toEqual([]);
    console.info(`iscsi-test-cu, session LUN: ${s.ran} ran, ${s.passed} passed, ${s.failed} failed; skipped:\n  ${s.skipped.join('\n  ')}`);
  }, 600_000);

  it('passes every non-writing family on a read-only restore-point LUN', async () => {
    const tests = families.filter((f) => !EXCLUDED.has(f) && !WRITING.has(f));
    expect(tests).toContain('ALL.ReadOnly');
    const s = await testCu(fx.url(fx.pointIqn, 0), tests);
    expect(s.failed, failures(s)).toBe(0);
    expect(s.ran).toBeGreaterThan(100);
    console.info(`iscsi-test-cu, point LUN: ${s.ran} ran, ${s.passed} passed, ${s.failed} failed; skipped:\n  ${s.skipped.join('\n  ')}`);
  }, 600_000);
});
