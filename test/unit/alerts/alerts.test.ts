/**
 * Alerts through a real local HTTP receiver (127.0.0.1, port 0): each alert kind fires once when
 * its condition starts and once when it clears (events once per job), no repeat while it lasts;
 * a receiver that is down gets the alert once it comes back (retried with backoff, delivered
 * once); a bounded queue drops the oldest. Clocks and retry waits are injected: nothing waits on
 * wall time.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { AlertMonitor, type AlertSources, type DiskUsage } from '../../../src/alerts/monitor.js';
import { WebhookSender, type AlertMessage } from '../../../src/alerts/webhooks.js';
import type { JobInfo } from '../../../src/api/jobs.js';
import type { SessionReport } from '../../../src/recovery/session-report.js';

interface Receiver {
  url: string;
  port: number;
  got: AlertMessage[];
  close(): Promise<void>;
}

const open: Receiver[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()));
});

async function receiver(port = 0, status = 200): Promise<Receiver> {
  const got: AlertMessage[] = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d));
    req.on('end', () => {
      expect(req.method).toBe('POST');
      expect(req.headers['content-type']).toBe('application/json');
      got.push(JSON.parse(body));
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => srv.listen(port, '127.0.0.1', resolve));
  const p = (srv.address() as AddressInfo).port;
  const r = { url: `http://127.0.0.1:${p}/hook`, port: p, got, close: () => new Promise<void>((resolve) => srv.close(() => resolve())) };
  srv.closeIdleConnections?.();
  open.push(r);
  return r;
}

/** Lets the event loop turn until `cond` holds; bounded by turns, not time. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await new Promise((resolve) => setImmediate(resolve));
  expect(cond()).toBe(true);
}

const GiB = 1024 ** 3;
const HOUR = 3600_000;

type DiskOver = Partial<SessionReport['disks'][number]>;
function session(over: Omit<Partial<SessionReport>, 'disks'> & { disks?: DiskOver[] } = {}): SessionReport {
  const disks = (over.disks ?? [{}]).map((d) => ({
    name: 'disk0', size: 10 * GiB, export: null, nbdUri: null, overlayBytes: 0, overlayDiskBytes: 0, quota: null,
    io: { reads: 0, writes: 0, readBytes: 0, writeBytes: 0, trims: 0, zeroes: 0, flushes: 0, errors: 0, writeRate: 0 },
    state: 'overlay', migration: null, switched: false, verified: null, ...d,
  })) as SessionReport['disks'];
  return {
    name: 's1', vm: 'web', point: 'p1', createdAt: '2026-12-01T00:00:00Z', ageSeconds: 60, state: 'running', publish: {} as never, qos: {},
    overlayBytes: disks.reduce((a, d) => a + d.overlayBytes, 0), writeRate: 0, warnings: [], commits: [], ...over, disks,
  };
}

function job(over: Partial<JobInfo>): JobInfo {
  return { id: 'j1', kind: 'backup', state: 'running', params: {}, progress: null, result: null, error: null, startedAt: '2026-12-06T00:00:00Z', finishedAt: null, ...over };
}

/** A monitor and sender wired to a receiver, with a clock and sources the test sets. */
function rig(urls: string[], waits?: (ms: number) => Promise<void>) {
  const state = { now: Date.parse('2026-12-06T12:00:00Z'), sessions: [] as SessionReport[], jobs: [] as JobInfo[], disk: undefined as DiskUsage | undefined };
  const sender = new WebhookSender({ urls, wait: waits ?? (() => Promise.resolve()), baseDelayMs: 1000 });
  const sources: AlertSources = { sessions: () => state.sessions, jobs: () => state.jobs, disk: async () => state.disk };
  const monitor = new AlertMonitor({ send: (m) => sender.send(m), sources, thresholds: { warnAgeHours: 24, warnBytes: 10 * GiB, diskFreePercent: 10, stallMs: 15 * 60_000 }, now: () => state.now, host: 'gw1' });
  const step = async () => {
    await monitor.check();
    await sender.idle();
  };
  return { state, sender, monitor, step };
}

const summary = (got: AlertMessage[]) => got.map((m) => `${m.state} ${m.key}`);

describe('alert kinds: one message when a condition starts, one when it clears', () => {
  it('session older than sessionWarnAgeHours', async () => {
    const r = await receiver();
    const { state, step } = rig([r.url]);
    state.sessions = [session({ ageSeconds: 23 * 3600 })];
    await step();
    expect(r.got).toEqual([]);
    state.sessions = [session({ ageSeconds: 25 * 3600 })];
    await step();
    await step(); // still old: nothing more
    state.sessions = []; // discarded
    await step();
    expect(summary(r.got)).toEqual(['firing session-age:s1', 'resolved session-age:s1']);
    expect(r.got[0]).toMatchObject({ kind: 'session-age', severity: 'warning', host: 'gw1', details: { session: 's1', vm: 'web', thresholdHours: 24 } });
    expect(r.got[1]!.endsAt).toBeDefined();
    expect(r.got[1]!.startsAt).toBe(r.got[0]!.startsAt);
  });

  it('session bigger than sessionWarnSize', async () => {
    const r = await receiver();
    const { state, step } = rig([r.url]);
    state.sessions = [session({ disks: [{ overlayBytes: 11 * GiB }] })];
    await step();
    await step();
    state.sessions = [session({ disks: [{ overlayBytes: 1 * GiB }] })];
    await step();
    expect(summary(r.got)).toEqual(['firing session-size:s1', 'resolved session-size:s1']);
  });

  it('quota above 90 %', async () => {
    const r = await receiver();
    const { state, step } = rig([r.url]);
    state.sessions = [session({ disks: [{ quota: 1000, overlayBytes: 900 }] })];
    await step();
    expect(r.got).toEqual([]); // 90 % is not above 90 %
    state.sessions = [session({ disks: [{ quota: 1000, overlayBytes: 950 }] })];
    await step();
    await step();
    expect(summary(r.got)).toEqual(['firing quota:s1/disk0']);
    expect(r.got[0]).toMatchObject({ kind: 'quota', severity: 'critical', details: { overlayBytes: 950, quota: 1000, disk: 'disk0' } });
  });

  it('migration paused, and stalled (no progress for alertMigrationStallMinutes)', async () => {
    const r = await receiver();
    const { state, step } = rig([r.url]);
    const mig = (doneBytes: number) => ({ disk: 'disk0', target: '/t/disk0.raw', state: 'copying' as const, totalBytes: 100, doneBytes, percent: doneBytes, dirtyBytes: 0, copiedBytes: doneBytes, rate: 0, etaSeconds: null, error: null });
    state.sessions = [session({ disks: [{ state: 'copying', migration: mig(10) }] })];
    await step();
    state.now += 14 * 60_000;
    await step();
    expect(r.got).toEqual([]);
    state.now += 60_000; // 15 min without progress
    await step();
    state.sessions = [session({ disks: [{ state: 'copying', migration: mig(20) }] })]; // it moves again
    await step();
    state.sessions = [session({ disks: [{ state: 'paused', migration: { ...mig(20), state: 'paused', error: 'ENOSPC on target' } }] })];
    await step();
    await step();
    state.sessions = [session({ disks: [{ state: 'in-step', migration: { ...mig(100), state: 'in-step' } }] })];
    await step();
    expect(summary(r.got)).toEqual([
      'firing migration-stalled:s1/disk0',
      'resolved migration-stalled:s1/disk0',
      'firing migration-paused:s1/disk0',
      'resolved migration-paused:s1/disk0',
    ]);
    expect(r.got[2]!.summary).toContain('ENOSPC on target');
  });

  it('verify found bad chunks; a backup or restore job failed (once per job, never again)', async () => {
    const r = await receiver();
    const { state, step } = rig([r.url]);
    state.jobs = [job({ id: 'v1', kind: 'verify', state: 'running' }), job({ id: 'b1', kind: 'backup', state: 'running' })];
    await step();
    state.jobs = [
      job({ id: 'v1', kind: 'verify', state: 'succeeded', result: { ok: false, problems: [{ chunk: 'ab', error: 'bad digest' }], indexProblems: [] }, finishedAt: '2026-12-06T12:01:00Z' }),
      job({ id: 'v2', kind: 'verify', state: 'succeeded', result: { ok: true, problems: [], indexProblems: [] } }),
      job({ id: 'b1', kind: 'backup', state: 'failed', error: { code: 'ERR_SOURCE_OPEN_FAILED', message: 'cannot read /dev/sdz' } }),
      job({ id: 'r1', kind: 'restore', state: 'failed', error: { code: 'ERR_INVALID_ARGUMENT', message: 'target too small' } }),
      job({ id: 'g1', kind: 'gc', state: 'failed', error: { code: 'ERR_INTERNAL', message: 'x' } }),
      job({ id: 'b2', kind: 'backup', state: 'cancelled' }),
    ];
    await step();
    await step();
    expect(summary(r.got).sort()).toEqual(['firing job-failed:b1', 'firing job-failed:r1', 'firing verify-bad-chunks:v1']);
    expect(r.got.find((m) => m.key === 'job-failed:b1')!.summary).toContain('cannot read /dev/sdz');
    expect(r.got.find((m) => m.key === 'verify-bad-chunks:v1')!.details).toMatchObject({ problems: [{ chunk: 'ab' }] });
  });

  it('a verification boot that did not boot, or could not run (once per job)', async () => {
    const r = await receiver();
    const { state, step } = rig([r.url]);
    state.jobs = [
      job({ id: 'x1', kind: 'boot-verify', state: 'succeeded', params: { vm: 'web', point: 'p1' }, result: { ok: false, reasons: ['TCP port 81 never answered (last attempt: closed)'], serialTail: ['boot:'] } }),
      job({ id: 'x2', kind: 'boot-verify', state: 'succeeded', params: { vm: 'web', point: 'p2' }, result: { ok: true, reasons: [] } }),
      job({ id: 'x3', kind: 'boot-verify', state: 'failed', params: { vm: 'web', point: 'p3' }, error: { code: 'ERR_VERIFY_UNAVAILABLE', message: 'cannot start qemu' } }),
    ];
    await step();
    await step();
    expect(summary(r.got).sort()).toEqual(['firing verify-boot-failed:x1', 'firing verify-boot-failed:x3']);
    const m = r.got.find((x) => x.key === 'verify-boot-failed:x1')!;
    expect(m.summary).toBe('restore point web@p1 did not boot: TCP port 81 never answered (last attempt: closed)');
    expect(m.details).toMatchObject({ serialTail: ['boot:'] });
    expect(r.got.find((x) => x.key === 'verify-boot-failed:x3')!.summary).toContain('cannot start qemu');
  });

  it("repository's disk nearly full (statfs)", async () => {
    const r = await receiver();
    const { state, step } = rig([r.url]);
    state.disk = { path: '/var/lib/rebound', totalBytes: 1000 * GiB, freeBytes: 150 * GiB };
    await step();
    state.disk = { ...state.disk, freeBytes: 50 * GiB };
    await step();
    await step();
    state.disk = { ...state.disk, freeBytes: 300 * GiB };
    await step();
    expect(summary(r.got)).toEqual(['firing repo-disk-full', 'resolved repo-disk-full']);
    expect(r.got[0]!.details).toMatchObject({ path: '/var/lib/rebound', thresholdPercent: 10 });
  });
});

describe('delivery', () => {
  it('a receiver that is down gets the alert once it comes back: retried with backoff, delivered once', async () => {
    const r1 = await receiver();
    const port = r1.port;
    await r1.close();
    open.splice(open.indexOf(r1), 1);
    // Retry waits are ours to release: each wait records its delay and resolves when we say.
    const delays: number[] = [];
    let release: (() => void) | undefined;
    const { state, sender, monitor } = rig([`http://127.0.0.1:${port}/hook`], (ms) => {
      delays.push(ms);
      return new Promise<void>((resolve) => (release = resolve));
    });
    state.disk = { path: '/data', totalBytes: 100, freeBytes: 1 };
    await monitor.check();
    // Let three attempts fail against the closed port.
    for (let i = 0; i < 3; i++) {
      await until(() => delays.length > i);
      if (i < 2) release!();
    }
    expect(delays).toEqual([1000, 2000, 4000]); // exponential backoff
    await monitor.check(); // the condition lasts: no second message queued
    const r2 = await receiver(port);
    release!();
    await sender.idle();
    expect(summary(r2.got)).toEqual(['firing repo-disk-full']);
    expect(sender.stats).toMatchObject({ delivered: 1, failedAttempts: 3, dropped: 0 });
  });

  it('a receiver answering 500 is retried; 2xx ends it; each URL gets its own copy', async () => {
    const bad = await receiver(0, 500);
    const good = await receiver();
    const { state, sender, step } = rig([bad.url, good.url]);
    state.disk = { path: '/data', totalBytes: 100, freeBytes: 1 };
    await step();
    expect(good.got).toHaveLength(1);
    expect(bad.got).toHaveLength(10); // maxAttempts, then dropped
    expect(sender.stats).toMatchObject({ delivered: 1, dropped: 1 });
  });

  it('the queue is bounded: the oldest alert is dropped', async () => {
    let release: (() => void) | undefined;
    const posted: string[] = [];
    const sender = new WebhookSender({
      urls: ['http://127.0.0.1:9/hook'],
      maxQueue: 3,
      post: async (_u, body) => {
        posted.push((JSON.parse(body) as AlertMessage).key);
        await new Promise<void>((resolve) => (release = resolve));
        return 204;
      },
    });
    const msg = (key: string): AlertMessage => ({ key, kind: 'quota', state: 'firing', severity: 'critical', summary: key, details: {}, startsAt: '', host: 'h' });
    for (const k of ['a', 'b', 'c', 'd', 'e']) sender.send(msg(k));
    // 'a' is in flight (head of the queue, never dropped); b, c are dropped for d, e.
    for (let i = 0; i < 3; i++) {
      await until(() => release !== undefined);
      const r = release!;
      release = undefined;
      r();
    }
    await sender.idle();
    expect(posted).toEqual(['a', 'd', 'e']);
    expect(sender.stats.dropped).toBe(2);
  });

  it('refuses webhook URLs that are not http(s)', () => {
    expect(() => new WebhookSender({ urls: ['ftp://x/y'] })).toThrow(/http/);
    expect(() => new WebhookSender({ urls: ['not a url'] })).toThrow(/not a URL/);
  });
});
