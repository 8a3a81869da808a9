import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { ExportRegistry } from '../../src/exports/registry.js';

describe('ExportRegistry', () => {
  it('adds, lists, resolves the default export and refuses duplicates and bad names', async () => {
    const r = new ExportRegistry();
    const added: string[] = [];
    r.on('added', (e) => added.push(e.name));
    r.add({ name: 'a', device: new MemoryDevice(4096) });
    r.add({ name: 'vm1@2026-01-01/disk0', device: new MemoryDevice(4096) });
    expect(added).toEqual(['a', 'vm1@2026-01-01/disk0']);
    expect(r.get('')!.name).toBe('a');
    expect(() => r.add({ name: 'a', device: new MemoryDevice(1) })).toThrow(/already exists/);
    expect(() => r.add({ name: 'bad name', device: new MemoryDevice(1) })).toThrow(/invalid export name/);
    expect(() => r.add({ name: '', device: new MemoryDevice(1) })).toThrow(/invalid export name/);
    await r.remove('a');
    expect(r.get('')!.name).toBe('vm1@2026-01-01/disk0');
    await expect(r.remove('a')).rejects.toThrow(/no export named/);
    expect(r.list().map((e) => e.toJSON().name)).toEqual(['vm1@2026-01-01/disk0']);
  });
  it('closes the device on removal, after in-flight I/O', async () => {
    const r = new ExportRegistry();
    const dev = new MemoryDevice(4096);
    const e = r.add({ name: 'x', device: dev });
    await e.device.write(Buffer.alloc(10, 1), 0);
    await r.closeAll();
    await expect(dev.read(Buffer.alloc(1), 0)).rejects.toThrow(/closed/);
    expect(r.list()).toEqual([]);
  });
  it('describes exports for the API', () => {
    const r = new ExportRegistry();
    const e = r.add({ name: 'x', device: new MemoryDevice(8192), description: 'd', details: () => ({ extra: 1 }) });
    expect(e.toJSON()).toMatchObject({ name: 'x', size: 8192, readOnly: false, description: 'd', stack: ['memory'], extra: 1, connections: 0 });
  });
});
