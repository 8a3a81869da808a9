/**
 * An in-process iSCSI target over its own publication catalog, on 127.0.0.1:0, for tests that drive
 * it with real initiators (libiscsi's tools, QEMU). It publishes on 'iscsi':
 *  - session `s1` with disks `disk0` and `disk1` (writable memory devices the test owns, sizes given);
 *  - restore point `vm1@20261122T034000Z` with disk `disk0` (read-only, a pattern buffer).
 */
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import type { BlockDevice } from '../../src/blockdev/types.js';
import type { ChapCredentials } from '../../src/iscsi/login.js';
import { pointIqn, sessionIqn } from '../../src/iscsi/names.js';
import { IscsiServer, type IscsiServerOptions } from '../../src/iscsi/target.js';
import { createLogger, silentLogger } from '../../src/util/log.js';
import { patternBuffer } from './images.js';
import { MemoryCatalog } from './memory-catalog.js';

export const INITIATOR = 'iqn.2026-12.org.rebound.test:initiator';
export const POINT_VM = 'vm1';
export const POINT_ID = '20261122T034000Z';

export interface IscsiFixture {
  mem: MemoryCatalog;
  server: IscsiServer;
  port: number;
  sessionIqn: string;
  pointIqn: string;
  disks: BlockDevice[];
  point: Buffer;
  /** iscsi://127.0.0.1:PORT/IQN/LUN (with user%secret@ when given). */
  url(iqn: string, lun: number, auth?: { user: string; secret: string }): string;
  close(): Promise<void>;
}

export async function startIscsi(opts: { sizes?: number[]; pointSize?: number; chap?: ChapCredentials; server?: Partial<IscsiServerOptions> } = {}): Promise<IscsiFixture> {
  const log = process.env.REBOUND_TEST_LOG ? createLogger({ level: 'debug' }) : silentLogger;
  const mem = new MemoryCatalog();
  const sizes = opts.sizes ?? [64 * 1024 * 1024, 16 * 1024 * 1024];
  const disks = sizes.map((n) => new MemoryDevice(n));
  mem.addSession(
    { name: 's1', vm: POINT_VM, pointId: POINT_ID, createdAt: new Date(), filesDir: '/nonexistent' },
    Object.fromEntries(disks.map((d, i) => [`disk${i}`, d])),
    { publish: ['iscsi'] },
  );
  const point = patternBuffer(0, opts.pointSize ?? 16 * 1024 * 1024, 7);
  mem.addPoint(POINT_VM, POINT_ID, { disk0: point }, { publish: ['iscsi'] });
  const server = new IscsiServer({ view: mem.view('iscsi'), log, ...(opts.chap ? { chap: opts.chap } : {}), ...opts.server });
  const { port } = await server.listen('127.0.0.1', 0);
  return {
    mem,
    server,
    port,
    sessionIqn: sessionIqn('s1'),
    pointIqn: pointIqn(POINT_VM, POINT_ID),
    disks,
    point,
    url: (iqn, lun, auth) => `iscsi://${auth ? `${encodeURIComponent(auth.user)}%${encodeURIComponent(auth.secret)}@` : ''}127.0.0.1:${port}/${iqn}/${lun}`,
    close: async () => {
      await server.close();
      await mem.close();
    },
  };
}
