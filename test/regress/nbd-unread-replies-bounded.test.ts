/**
 * Regress: an NBD client that never reads its replies made the server start every request it
 * sent (up to 256 per connection), each READ with its reply buffer allocated: 128 unread 32 MiB
 * reads held 4.27 GB, and the reads went on after the client had gone. Now the payload bytes of the
 * requests running on a connection stay within a budget (64 MiB by default), no request is read
 * while 32 MiB of replies wait unsent, and a vanished client's queued work is cancelled. Another,
 * well-behaved client is served meanwhile.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { Cmd } from '../../src/nbd/protocol.js';
import { GatedDisk, startNbd, type NbdFixture } from '../helpers/nbd-fixture.js';
import { RawNbdClient } from '../helpers/raw-nbd.js';

const MiB = 1024 * 1024;
let fx: NbdFixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});


describe('regress: a client that never reads its replies', () => {
  it('gets only a bounded number of requests started, while another client is served', async () => {
    const disk = new GatedDisk(64 * MiB);
    fx = await startNbd([{ name: 'd', device: disk }]);
    const bad = await RawNbdClient.connect({ path: fx.socket });
    await bad.handshake('d', { structured: false });
    bad.socket.pause(); // never read a reply again
    const READS = 64;
    const LEN = 8 * MiB;
    for (let i = 0; i < READS; i++) bad.request(Cmd.READ, { cookie: BigInt(i + 1), offset: (i % 4) * LEN, length: LEN });

    // A well-behaved client on another connection reads and writes meanwhile.
    const good = await NbdClient.connect(`nbd+unix:///d?socket=${fx.socket}`);
    const data = Buffer.alloc(64 * 1024, 7);
    await good.write(data, 60 * MiB);
    const back = Buffer.alloc(data.length);
    await good.read(back, 60 * MiB);
    expect(back.equals(data)).toBe(true);
    await good.close();

    // Let the server take whatever it will take from the stalled connection (bounded by count).
    let last = -1;
    for (let i = 0; i < 50 && disk.started !== last; i++) {
      last = disk.started;
      await new Promise((r) => setTimeout(r, 20));
    }
    // The budget: 64 MiB of 8 MiB reads running at once, not all 64 (512 MiB of reply buffers).
    expect(disk.started).toBe(8);
    disk.open();
    bad.close();
  });
});
