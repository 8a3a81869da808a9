/**
 * Every disk state change is saved before it takes effect (disk-state.ts). The dangerous moment is
 * the switch-over: if `switched` cannot be saved, the export must stay on the overlay, and a
 * restart must find the overlay authoritative — otherwise a restart would copy the overlay over a
 * target the VM had been writing to, losing those writes (the wave-1 bug).
 *
 * Saves are made to fail deterministically by putting a directory where the record's temp file
 * goes (session.json.tmp): the next save fails with EISDIR, as it would with ENOSPC.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Catalog } from '../../../src/exports/catalog.js';
import { backup } from '../../../src/repo/ingest.js';
import { Repository } from '../../../src/repo/repository.js';
import { SessionManager } from '../../../src/recovery/session-manager.js';
import { createLogger, silentLogger } from '../../../src/util/log.js';
import { tempDir } from '../../helpers/images.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;

let dir: string;
let repo: Repository;
let catalog: Catalog;

const openManager = (): Promise<SessionManager> =>
  SessionManager.open({
    dataDir: path.join(dir, 'data'),
    repo,
    catalog: (catalog = new Catalog()),
    log: process.env.REBOUND_TEST_LOG ? createLogger({ level: 'debug' }) : silentLogger,
    globalQos: {},
    report: { warnAgeHours: 0, warnBytes: 0, endpoints: () => ({ nbd: [], nbdSocket: [] }) },
  });

function pattern(seed: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return b;
}

beforeEach(async () => {
  dir = tempDir('rebound-durable-switch-');
  const img = path.join(dir, 'disk.img');
  fs.writeFileSync(img, pattern(1, SIZE));
  repo = await Repository.open(path.join(dir, 'data'), { chunkSize: 256 * 1024 });
  await backup(repo, { vm: 'vm', disks: [{ name: 'disk0', source: img }] });
});

afterEach(async () => {
  await repo.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const recordFile = (): string => path.join(dir, 'data', 'sessions', 's', 'session.json');
const blockSaves = (): void => fs.mkdirSync(`${recordFile()}.tmp`);
const allowSaves = (): void => fs.rmSync(`${recordFile()}.tmp`, { recursive: true });
const savedStates = (): string[] => (JSON.parse(fs.readFileSync(recordFile(), 'utf8')) as { disks: Array<{ state: string }> }).disks.map((d) => d.state);

async function readDisk(dev: { read(b: Uint8Array, o: number): Promise<void> }): Promise<Buffer> {
  const b = Buffer.alloc(SIZE);
  await dev.read(b, 0);
  return b;
}

describe('durable session state', () => {
  it('refuses a change it cannot save, and changes nothing', async () => {
    const mgr = await openManager();
    await mgr.recover({ vm: 'vm', name: 's' });
    blockSaves();
    await expect(mgr.migrate('s', { to: path.join(dir, 'target.raw') })).rejects.toMatchObject({ code: 'ERR_DATA_DIR_UNUSABLE', message: /cannot save the state of session s .*nothing was changed/ });
    expect(mgr.require('s').disks[0]!.state).toBe('running');
    expect(fs.existsSync(path.join(dir, 'target.raw'))).toBe(false);
    await expect(mgr.discard('s')).rejects.toMatchObject({ code: 'ERR_DATA_DIR_UNUSABLE' });
    expect(catalog.has('session/s/disk0')).toBe(true); // still published, still running
    allowSaves();
    await mgr.close();
  });

  it('a switch whose `switched` cannot be saved leaves the VM on its overlay, and a restart loses no write', async () => {
    const target = path.join(dir, 'target.raw');
    let mgr = await openManager();
    const s = await mgr.recover({ vm: 'vm', name: 's' });
    const top = s.disks[0]!.top;
    const expected = pattern(1, SIZE);
    const write = async (seed: number, off: number, len: number): Promise<void> => {
      const data = pattern(seed, len);
      await top.write(data, off);
      data.copy(expected, off);
    };
    await write(2, 0, MiB); // before the migration
    await mgr.migrateHome('s', { to: target });
    await write(3, 3 * MiB, 64 * 1024); // while in step

    // The save of `switching` works; the save of `switched` will not.
    const disk = s.disks[0]!;
    const sawSwitching = disk.whenState(['switching'], []).then(blockSaves);
    await expect(mgr.switchOver('s')).rejects.toMatchObject({ code: 'ERR_DATA_DIR_UNUSABLE' });
    await sawSwitching;
    expect(savedStates()).toEqual(['switching']); // on disk: the switch never took effect
    expect(disk.overlay).toBeDefined();
    // The VM keeps running on its overlay: new writes land there and read back.
    await write(4, 5 * MiB, 128 * 1024);
    await top.flush();
    expect((await readDisk(top)).equals(expected)).toBe(true);

    // Restart (saves work again): the switch is undone, the copy resumes, nothing is lost.
    allowSaves();
    await mgr.close();
    mgr = await openManager();
    const s2 = mgr.require('s');
    expect(['copying', 'in-step']).toContain(s2.disks[0]!.state);
    expect((await readDisk(s2.disks[0]!.top)).equals(expected)).toBe(true);
    // Now the way home works, and the target holds every acknowledged write.
    const r = await mgr.migrateHome('s', { to: target, switch: true });
    expect(r.switched).toEqual([{ disk: 'disk0', units: 8, repaired: 0 }]);
    expect(savedStates()).toEqual(['retired']);
    expect(fs.existsSync(path.join(dir, 'data', 'sessions', 's', 'overlays', 'disk0'))).toBe(false);
    expect(fs.readFileSync(target).equals(expected)).toBe(true);
    await mgr.finish('s');
    await mgr.close();
  });

  it('a restart after `switched` was saved keeps the target authoritative (the overlay is retired, not copied)', async () => {
    const target = path.join(dir, 'target.raw');
    let mgr = await openManager();
    const s = await mgr.recover({ vm: 'vm', name: 's' });
    const expected = pattern(1, SIZE);
    await mgr.migrateHome('s', { to: target });
    // Stop right after `switched` is saved: the final comparison and retirement never run.
    const disk = s.disks[0]!;
    const switched = disk.whenState(['switched'], []).then(blockSaves);
    await expect(mgr.switchOver('s')).rejects.toMatchObject({ code: 'ERR_DATA_DIR_UNUSABLE' }); // `retired` cannot be saved
    await switched;
    expect(savedStates()).toEqual(['switched']);
    // The VM writes to the target now.
    const data = pattern(9, MiB);
    await disk.top.write(data, 2 * MiB);
    await disk.top.flush();
    data.copy(expected, 2 * MiB);
    allowSaves();
    await mgr.close();
    mgr = await openManager();
    expect(mgr.require('s').disks[0]!.state).toBe('retired');
    expect((await readDisk(mgr.require('s').disks[0]!.top)).equals(expected)).toBe(true);
    expect(fs.readFileSync(target).equals(expected)).toBe(true);
    await mgr.close();
  });
});
