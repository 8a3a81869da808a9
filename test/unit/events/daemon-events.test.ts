/** EventHub and DaemonEvents: fan-out, replay ring, the sampler's session/job events and rates. */
import { describe, expect, it } from 'vitest';
import { EventHub, RECENT_MAX, type HubEvent } from '../../../src/events/event-hub.js';
import { DaemonEvents } from '../../../src/events/daemon-events.js';
import { Catalog } from '../../../src/exports/catalog.js';
import { JobRegistry } from '../../../src/api/jobs.js';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { silentLogger } from '../../../src/util/log.js';
import type { SessionReport } from '../../../src/recovery/session-report.js';

const io = (reads: number, writes: number, bytes: number) => ({ reads, writes, readBytes: bytes, writeBytes: bytes, trims: 0, zeroes: 0, flushes: 0, errors: 0, writeRate: 0 });

function report(name: string, state: SessionReport['state'], counters: ReturnType<typeof io>): SessionReport {
  return {
    name, vm: 'vm1', point: 'p1', createdAt: new Date().toISOString(), ageSeconds: 1, state,
    publish: { nbd: true }, qos: {}, overlayBytes: 4096, writeRate: 0, warnings: [], commits: [],
    disks: [{ name: 'sda', size: 1 << 20, export: null, nbdUri: null, overlayBytes: 4096, overlayDiskBytes: 4096, quota: null, io: counters, state: state === 'in-step' ? 'in-step' : 'running', migration: null, switched: false, verified: null }],
  } as unknown as SessionReport;
}

describe('EventHub', () => {
  it('fans out, keeps only notable events, bounded, and reports activity', () => {
    const active: boolean[] = [];
    const hub = new EventHub({ onActive: (a) => active.push(a) });
    const got: HubEvent[] = [];
    const off = hub.subscribe((e) => got.push(e));
    hub.subscribe(() => {
      throw new Error('a broken subscriber');
    });
    hub.publish('sample', { n: 1 });
    hub.publish('note', { n: 2 }, { vm: 'a', keep: true });
    expect(got.map((e) => [e.type, e.id])).toEqual([['sample', 1], ['note', 2]]);
    expect(hub.recent().map((e) => e.type)).toEqual(['note']);
    expect(hub.recent()[0]!.vm).toBe('a');
    for (let i = 0; i < RECENT_MAX + 10; i++) hub.publish('note', { i }, { keep: true });
    expect(hub.recent()).toHaveLength(RECENT_MAX);
    expect(hub.recent().at(-1)!.data).toEqual({ i: RECENT_MAX + 9 });
    off();
    off();
    expect(hub.subscribers).toBe(1);
    expect(active).toEqual([true]);
  });
});

describe('DaemonEvents', () => {
  it('turns the sessions report, the jobs and the catalog into events', async () => {
    const catalog = new Catalog();
    const jobs = new JobRegistry(silentLogger);
    let reports: SessionReport[] = [];
    // The metrics' meters of the session's disk: 30 writes took 0.06 s in all between the two samples.
    const meter = { ops: new Float64Array(6), seconds: new Float64Array(6) };
    const meters = { entries: () => new Map([['session/s1/sda', meter]]).entries() } as unknown as ConstructorParameters<typeof DaemonEvents>[0]['io'];
    const ev = new DaemonEvents({ catalog, sessions: () => reports, jobs: () => jobs.list(), io: meters, periodMs: 3_600_000 });
    const got: HubEvent[] = [];
    const off = ev.hub.subscribe((e) => got.push(e)); // first subscriber: one tick at once
    const types = (): string[] => got.splice(0).map((e) => e.type);
    expect(types()).toEqual([]);

    reports = [report('s1', 'running', io(0, 0, 0))];
    ev.tick();
    const created = got.filter((e) => e.type === 'session.created');
    expect(created).toHaveLength(1);
    expect(created[0]!.vm).toBe('vm1');
    const first = got.find((e) => e.type === 'session')!;
    expect((first.data.disks as Array<{ iops: number | null }>)[0]!.iops).toBeNull(); // no rate from one sample
    got.length = 0;

    await new Promise((r) => setTimeout(r, 20));
    meter.ops[1] = 30;
    meter.seconds[1] = 0.06;
    reports = [report('s1', 'in-step', io(10, 30, 4096 * 40))];
    ev.tick();
    expect(got.map((e) => e.type)).toEqual(['session.state', 'session']);
    const d = (got[1]!.data.disks as Array<Record<string, number>>)[0]!;
    expect(d.iops).toBeGreaterThan(0);
    expect(d.writeIops! / d.readIops!).toBeCloseTo(3, 1);
    expect(d.writeBps).toBeGreaterThan(0);
    expect(d.writeLatencyMs).toBeCloseTo(2, 6);
    expect(d.readLatencyMs).toBeNull(); // no reads metered in that tick
    got.length = 0;

    let finish!: () => void;
    const job = jobs.start('verify', { vm: 'vm1' }, (_signal, progress) => {
      progress({ done: 1 });
      return new Promise<void>((r) => (finish = r));
    });
    reports = [];
    ev.tick();
    expect(got.map((e) => e.type)).toEqual(['session.removed', 'job']);
    ev.tick();
    expect(got.filter((e) => e.type === 'job')).toHaveLength(1); // unchanged: not sent again
    finish();
    await new Promise((r) => setTimeout(r, 20));
    ev.tick();
    const last = got.at(-1)!;
    expect(last.type).toBe('job');
    expect((last.data.job as { id: string; state: string })).toMatchObject({ id: job.id, state: 'succeeded' });
    expect(ev.hub.recent().map((e) => e.type)).toEqual(['session.created', 'session.state', 'session.removed', 'job', 'job']);

    const device = new MemoryDevice(1 << 20);
    catalog.publish({ name: 'disk', kind: 'adhoc', disk: 'disk', size: device.size, capabilities: device.capabilities(), publish: ['nbd'], description: 'memory', source: 'memory', device });
    expect(got.at(-1)).toMatchObject({ type: 'catalog', data: { change: 'added', name: 'disk', kind: 'adhoc' } });
    off();
    ev.close();
    await catalog.unpublish('disk');
    expect(got.at(-1)!.type).toBe('catalog'); // closed: no more catalog listeners
    expect(got.filter((e) => e.data.change === 'removed')).toHaveLength(0);
    await jobs.close();
    await catalog.close();
  });
});
