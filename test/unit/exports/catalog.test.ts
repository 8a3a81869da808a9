/** The publication catalog: names, grouping, per-front-end views, shared devices behind per-opener gates, and the two ways out. */
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../../src/blockdev/base/memory.js';
import { readOnlyCapabilities, writableCapabilities, type BlockDevice } from '../../../src/blockdev/types.js';
import { Catalog, pointEntryName, sessionEntryName, type FrontEnd, type PointInfo, type SessionInfo } from '../../../src/exports/catalog.js';
import { ListingFrontEnd } from '../../helpers/listing-front-end.js';

function filled(size: number, byte: number): MemoryDevice {
  const m = new MemoryDevice(size);
  void m.write(Buffer.alloc(size, byte), 0);
  return m;
}

/** A memory device that counts opens and closes. */
function counted(size: number, byte: number): { open: () => Promise<BlockDevice>; opens: number; closes: number } {
  const c = {
    opens: 0,
    closes: 0,
    open: async (): Promise<BlockDevice> => {
      c.opens++;
      const dev = filled(size, byte);
      const close = dev.close.bind(dev);
      dev.close = async () => {
        c.closes++;
        await close();
      };
      return dev;
    },
  };
  return c;
}

const point = (vm: string, id: string): PointInfo => ({ vm, id, createdAt: new Date('2026-11-22T03:00:00Z'), configs: [], readConfig: async () => Buffer.alloc(0) });
const session = (name: string): SessionInfo => ({ name, vm: 'web1', pointId: 'p1', createdAt: new Date(), filesDir: '/nonexistent' });

function publishPoint(c: Catalog, vm: string, id: string, disk: string, byte: number, publish: FrontEnd[] = ['nbd', 'nfs', 'fuse']): ReturnType<typeof counted> {
  const src = counted(8192, byte);
  c.publish({ name: pointEntryName(vm, id, disk), kind: 'point', disk, size: 8192, capabilities: readOnlyCapabilities(), publish, point: point(vm, id), open: src.open });
  return src;
}

describe('Catalog', () => {
  it('publishes, refuses duplicates and bad names, and resolves VM@latest to the newest point', () => {
    const c = new Catalog();
    const added: string[] = [];
    c.on('added', (e) => added.push(e.name));
    publishPoint(c, 'web1', '20261122T030000Z', 'disk0', 1);
    publishPoint(c, 'web1', '20261123T030000Z', 'disk0', 2);
    expect(added).toEqual(['web1@20261122T030000Z/disk0', 'web1@20261123T030000Z/disk0']);
    expect(c.resolve('web1@latest/disk0')!.name).toBe('web1@20261123T030000Z/disk0');
    expect(c.resolve('web1@latest/disk9')).toBeUndefined();
    expect(() => publishPoint(c, 'web1', '20261122T030000Z', 'disk0', 1)).toThrow(/already exists/);
    expect(() => c.publish({ name: 'bad name', kind: 'adhoc', disk: 'x', size: 1, capabilities: readOnlyCapabilities(), publish: ['nbd'], device: new MemoryDevice(1) })).toThrow(/invalid export name/);
    expect(() => c.publish({ name: 'p', kind: 'point', disk: 'x', size: 1, capabilities: readOnlyCapabilities(), publish: ['nbd'], device: new MemoryDevice(1) })).toThrow(TypeError);
    expect(c.vms().map((v) => [v.vm, v.points.map((p) => p.info.id)])).toEqual([['web1', ['20261122T030000Z', '20261123T030000Z']]]);
  });

  it('shows each front end only what is published on it', () => {
    const c = new Catalog();
    publishPoint(c, 'web1', 'p1', 'disk0', 1, ['nfs', 'fuse']);
    c.publish({ name: sessionEntryName('s1', 'disk0'), kind: 'session', disk: 'disk0', size: 4096, capabilities: writableCapabilities(), publish: ['nbd'], session: session('s1'), device: new MemoryDevice(4096) });
    expect(c.view('nbd').names().map((n) => n.name)).toEqual(['session/s1/disk0']);
    expect(c.view('nbd').sessions().map((s) => s.info.name)).toEqual(['s1']);
    expect(c.view('nfs').sessions()).toEqual([]);
    expect(c.view('fuse').sessions()).toEqual([]);
    expect(c.view('fuse').vms().map((v) => v.vm)).toEqual(['web1']);
    expect(c.view('nbd').vms()).toEqual([]);
    expect(c.view('nbd').get('web1@p1/disk0')).toBeUndefined();
    expect(c.view('nfs').get('web1@latest/disk0')!.name).toBe('web1@p1/disk0');
  });

  it('opens a shared device once, each opener behind its own gate and error hook', async () => {
    const c = new Catalog();
    const src = publishPoint(c, 'web1', 'p1', 'disk0', 7);
    const e = c.resolve('web1@p1/disk0')!;
    expect(src.opens).toBe(0); // publishing costs nothing
    const a = await e.open();
    const b = await e.open();
    expect(src.opens).toBe(1);
    expect(e.openers).toBe(2);
    const got = Buffer.alloc(4);
    await a.read(got, 100);
    expect([...got]).toEqual([7, 7, 7, 7]);
    await expect(a.write(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'EROFS' }); // the gate checks
    await a.close();
    await expect(a.read(got, 0)).rejects.toMatchObject({ code: 'ESHUTDOWN' });
    await b.read(got, 0); // the other opener is unaffected
    await b.close();
    expect(src.closes).toBe(0); // still published: the device stays open for the next opener
  });

  it('unpublish: hidden at once, openers keep reading, the device closes after the last one', async () => {
    const c = new Catalog();
    const src = publishPoint(c, 'web1', 'p1', 'disk0', 3);
    const e = c.resolve('web1@p1/disk0')!;
    const dev = await e.open();
    await c.unpublish('web1@p1/disk0');
    expect(c.resolve('web1@p1/disk0')).toBeUndefined();
    await expect(e.open()).rejects.toMatchObject({ code: 'ERR_EXPORT_NOT_FOUND' });
    await dev.read(Buffer.alloc(1), 0);
    expect(src.closes).toBe(0);
    await dev.close();
    expect(src.closes).toBe(1);
  });

  it('revoke: every opener is closed now (after its in-flight requests), publisher-owned devices stay open', async () => {
    const c = new Catalog();
    const mem = filled(4096, 1);
    c.publish({ name: sessionEntryName('s1', 'disk0'), kind: 'session', disk: 'disk0', size: 4096, capabilities: writableCapabilities(), publish: ['nbd', 'nfs'], session: session('s1'), device: mem, owned: false });
    const removed: string[] = [];
    c.on('removed', (e) => removed.push(e.name));
    const e = c.resolve('session/s1/disk0')!;
    const g1 = await e.open();
    const g2 = await e.open();
    const inflight = g1.write(Buffer.alloc(512, 9), 0);
    await c.revoke('session/s1/disk0');
    await inflight; // drained, not cut
    expect(removed).toEqual(['session/s1/disk0']);
    await expect(g2.read(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'ESHUTDOWN' });
    const got = Buffer.alloc(1);
    await mem.read(got, 0); // the session still owns its device
    expect(got[0]).toBe(9);
  });

  it('a failed open is retried by the next opener', async () => {
    const c = new Catalog();
    let fail = true;
    c.publish({
      name: 'x', kind: 'adhoc', disk: 'x', size: 4096, capabilities: readOnlyCapabilities(), publish: ['nbd'],
      open: async () => {
        if (fail) throw new Error('index unreadable');
        return new MemoryDevice(4096);
      },
    });
    await expect(c.resolve('x')!.open()).rejects.toMatchObject({ code: 'ERR_SOURCE_OPEN_FAILED', message: /index unreadable/ });
    fail = false;
    await (await c.resolve('x')!.open()).close();
  });

  it('views report only changes visible to them', async () => {
    const c = new Catalog();
    const seen: string[] = [];
    const stop = c.view('fuse').onChange((e, what) => seen.push(`${what} ${e.name}`));
    publishPoint(c, 'web1', 'p1', 'disk0', 1, ['nbd']);
    publishPoint(c, 'web1', 'p2', 'disk0', 1, ['fuse']);
    c.changed('web1@p2/disk0');
    await c.unpublish('web1@p2/disk0');
    stop();
    publishPoint(c, 'web1', 'p3', 'disk0', 1, ['fuse']);
    expect(seen).toEqual(['added web1@p2/disk0', 'changed web1@p2/disk0', 'removed web1@p2/disk0']);
  });

  it('is all a front end needs: a fifty-line front end lists and reads every disk published on it', async () => {
    const c = new Catalog();
    publishPoint(c, 'web1', '20261122T030000Z', 'disk0', 1);
    publishPoint(c, 'web1', '20261123T030000Z', 'disk0', 2);
    publishPoint(c, 'db1', '20261122T030000Z', 'data', 3);
    c.publish({ name: sessionEntryName('s1', 'disk0'), kind: 'session', disk: 'disk0', size: 8192, capabilities: writableCapabilities({ min: 512, preferred: 4096, max: 1 << 20 }), publish: ['nbd', 'fuse'], session: session('s1'), device: filled(8192, 4), owned: false });
    c.publish({ name: 'scratch', kind: 'adhoc', disk: 'scratch', size: 4096, capabilities: writableCapabilities(), publish: ['nbd'], device: filled(4096, 5) });
    const fe = new ListingFrontEnd(c.view('nbd'));
    expect([...fe.list().keys()].sort()).toEqual([
      'other/scratch',
      'sessions/s1/disk0',
      'vms/db1/20261122T030000Z/data',
      'vms/db1/latest/data',
      'vms/web1/20261122T030000Z/disk0',
      'vms/web1/20261123T030000Z/disk0',
      'vms/web1/latest/disk0',
    ]);
    const all = await fe.readAll();
    expect(all.get('vms/web1/latest/disk0')!.equals(Buffer.alloc(8192, 2))).toBe(true);
    expect(all.get('vms/db1/20261122T030000Z/data')!.equals(Buffer.alloc(8192, 3))).toBe(true);
    expect(all.get('other/scratch')!.equals(Buffer.alloc(4096, 5))).toBe(true);
    // Unaligned reads of a 512-byte-aligned disk work through readAt.
    expect((await fe.read('sessions/s1/disk0', 3, 10)).equals(Buffer.alloc(10, 4))).toBe(true);
    expect(fe.errors).toEqual([]);
    expect(c.entries().every((e) => e.openers === 0)).toBe(true); // every read closed its gate
  });

  it('close() revokes everything and closes owned devices', async () => {
    const c = new Catalog();
    const src = publishPoint(c, 'web1', 'p1', 'disk0', 1);
    await (await c.resolve('web1@p1/disk0')!.open()).close();
    await c.close();
    expect(c.entries()).toEqual([]);
    expect(src.closes).toBe(1);
  });
});
