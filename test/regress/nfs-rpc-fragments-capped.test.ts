/**
 * Regression: RPC fragments without the last-fragment bit were buffered forever (the record
 * decoder keeps them until the record is complete, and the size check only saw the bytes not yet
 * decoded): the daemon's RSS grew ~2 MiB per MiB a client sent. Fixed: a record's size counts its
 * unfinished fragments; past MAX_RECORD_BYTES the connection is dropped and the others go on.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { MAX_IO } from '../../src/nfs/nfs3/context.js';
import { MAX_RECORD_BYTES } from '../../src/nfs/rpc/constants.js';
import { tempDir } from '../helpers/images.js';
import { startInProcess, type InProcess } from '../helpers/nfs-fixture.js';
import { MOUNT, NFS, RpcTestClient } from '../helpers/nfs-rpc.js';

let dir: string;
let srv: InProcess;

beforeEach(async () => {
  dir = tempDir('rebound-nfs-frag-');
  srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'));
});

afterEach(async () => {
  await srv?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

it('the record cap leaves room for the largest WRITE the server advertises', () => {
  expect(MAX_RECORD_BYTES).toBeGreaterThanOrEqual(MAX_IO + 64 * 1024);
});

it('drops a connection whose unfinished record passes MAX_RECORD_BYTES; another client still gets answers', async () => {
  const FRAGMENT = 64 * 1024;
  const count = Math.ceil(MAX_RECORD_BYTES / FRAGMENT) + 8; // bounded: just past the cap
  const sock = net.connect({ port: srv.port, host: '127.0.0.1' });
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.on('error', () => undefined); // writes after the server's close may fail
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  const mark = Buffer.alloc(4);
  mark.writeUInt32BE(FRAGMENT); // no last-fragment bit
  const piece = Buffer.concat([mark, Buffer.alloc(FRAGMENT, 0x5a)]);
  for (let i = 0; i < count && !sock.destroyed; i++) {
    if (!sock.write(piece)) await new Promise<void>((r) => { sock.once('drain', () => r()); sock.once('close', () => r()); });
  }
  await closed;

  const c = await RpcTestClient.connect(srv.port);
  expect(await c.call(NFS, 3, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
  expect(await c.call(MOUNT, 3, 0)).toMatchObject({ kind: 'accepted', stat: 0 });
  const root = (await c.mount('/')).fh!;
  expect((await c.getattr(root)).status).toBe(0);
  c.close();
});
