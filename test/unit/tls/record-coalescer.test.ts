/** RecordCoalescer: batches a stream's chunks per macrotask, in order, without copying; data before end. */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ByteReader } from '../../../src/nbd/byte-reader.js';
import type { Duplex } from 'node:stream';
import { RecordCoalescer } from '../../../src/tls/record-coalescer.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('RecordCoalescer', () => {
  it('delivers the chunks of one macrotask together, after it, in order and as the same buffers', async () => {
    const src = new PassThrough();
    const c = new RecordCoalescer(src);
    const got: Buffer[] = [];
    c.on('data', (b: Buffer) => got.push(b));
    const a = Buffer.from('one');
    const b = Buffer.from('two');
    src.write(a);
    src.write(b);
    await new Promise((r) => process.nextTick(r));
    await tick();
    await tick();
    expect(got.map((x) => x.toString())).toEqual(['one', 'two']);
    expect(got[0]!.buffer).toBe(a.buffer);
  });

  it('holds data while paused, and delivers what is queued before end and close', async () => {
    const src = new PassThrough();
    const c = new RecordCoalescer(src);
    const events: string[] = [];
    c.on('data', (b: Buffer) => events.push(`data:${b.toString()}`));
    c.on('end', () => events.push('end'));
    c.on('close', () => events.push('close'));
    c.pause();
    src.write('a');
    await tick();
    await tick();
    expect(events).toEqual([]);
    c.resume();
    await tick();
    await tick();
    expect(events).toEqual(['data:a']);
    src.write('b');
    src.end();
    await new Promise((r) => src.once('close', r));
    await tick();
    expect(events).toEqual(['data:a', 'data:b', 'end', 'close']);
  });

  it('feeds a ByteReader: exact reads across batched chunks, then ConnectionClosed', async () => {
    const src = new PassThrough();
    const reader = new ByteReader(new RecordCoalescer(src) as unknown as Duplex);
    for (let i = 0; i < 10; i++) src.write(Buffer.from([i, i]));
    const first = await reader.readExact(5);
    expect([...first]).toEqual([0, 0, 1, 1, 2]);
    const rest = await reader.readExact(15);
    expect(rest.length).toBe(15);
    src.end();
    await expect(reader.readExact(1)).rejects.toThrow(/closed/);
  });
});
