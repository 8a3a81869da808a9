/**
 * nbd/reply-writer.ts with the real native sender (sendfile) over a real Unix socket: replies
 * arrive whole and in the order they were handed over, whether they are buffers or file spans, sent
 * at once or on the thread pool; a reader that stops reading makes the file send hand the rest to
 * the stream (readRest), and nothing is lost once it reads again; a reader that leaves ends the
 * send without harm. On rebound's TLS record stream a tick's buffer replies leave as one sealed
 * batch, still in order with file replies, and count as unsent until the socket took them.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileSender, socketDescriptor } from '../../../src/native/send-file.js';
import { tlsRecordFunctions } from '../../../src/native/tls-record.js';
import { fileRepliesFor, ReplyWriter } from '../../../src/nbd/reply-writer.js';
import { TlsRecordStream } from '../../../src/tls/record-stream.js';
import { tls13Suite, TrafficKeys } from '../../../src/tls/tls13-keys.js';
import { silentLogger } from '../../../src/util/log.js';
import { tempDir } from '../../helpers/images.js';

const dir = tempDir('rebound-reply-writer-');
const FILE_SIZE = 16 * 1024 * 1024;
const content = crypto.randomBytes(FILE_SIZE);
const file = path.join(dir, 'image.raw');
let fd: number;
const send = fileSender();

beforeAll(() => {
  fs.writeFileSync(file, content);
  fd = fs.openSync(file, 'r');
});
afterAll(() => {
  fs.closeSync(fd);
  fs.rmSync(dir, { recursive: true, force: true });
});

let seq = 0;
/** A connected Unix socket pair: [server side, client side], and a closer. */
async function unixPair(): Promise<{ server: net.Socket; client: net.Socket; close: () => void }> {
  const sock = path.join(dir, `s${seq++}.sock`);
  const listener = net.createServer();
  await new Promise<void>((r) => listener.listen(sock, r));
  const accepted = new Promise<net.Socket>((r) => listener.once('connection', r));
  const client = net.connect(sock);
  await new Promise<void>((r) => client.once('connect', () => r()));
  const server = await accepted;
  server.on('error', () => undefined); // EPIPE after the reader left: the NBD server handles it the same way
  return {
    server,
    client,
    close: () => {
      server.destroy();
      client.destroy();
      listener.close();
    },
  };
}

/** Collects what the client receives until `bytes` arrived. */
function receive(client: net.Socket, bytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  return new Promise((resolve, reject) => {
    const onData = (b: Buffer): void => {
      parts.push(b);
      got += b.length;
      if (got >= bytes) {
        client.off('data', onData);
        resolve(Buffer.concat(parts));
      }
    };
    client.on('data', onData);
    client.once('error', reject);
  });
}

const readRestFromFile = (position: number) => async (from: number, length: number): Promise<Buffer> => Buffer.from(content.subarray(position + from, position + from + length));

/** Replies handed to `writer` as they are sent: the bytes a reader must get, in order, and a promise per reply. */
function replyLog(writer: ReplyWriter) {
  const expected: Buffer[] = [];
  const done: Array<Promise<void>> = [];
  return {
    expected,
    done,
    buffer(b: Buffer): void {
      expected.push(b);
      done.push(new Promise((r) => writer.send([b], r)));
    },
    file(header: Buffer, position: number, length: number): void {
      expected.push(header, content.subarray(position, position + length));
      done.push(writer.sendFile(header, { fd, position }, length, readRestFromFile(position)));
    },
  };
}

describe.skipIf(!send)('ReplyWriter with file replies (native sendfile)', () => {
  it('keeps the order of buffer and file replies, small (sent at once) and large (thread pool)', async () => {
    const { server, client, close } = await unixPair();
    try {
      const writer = new ReplyWriter(server, silentLogger, fileRepliesFor(server));
      expect(writer.canSendFiles).toBe(true);
      const { expected, done, buffer, file } = replyLog(writer);
      const spans = [
        [0, 64 * 1024],
        [4096, 256 * 1024],
        [1 << 20, 3 * 1024 * 1024], // above the synchronous limit: the thread pool sends it
        [123 * 4096, 128 * 1024],
        [FILE_SIZE - 4 * 1024 * 1024, 4 * 1024 * 1024],
      ] as const;
      spans.forEach(([position, length], i) => {
        buffer(Buffer.from(`buffer reply ${i} `));
        file(Buffer.from(`header ${i}:`), position, length);
      });
      buffer(Buffer.from('the last buffer reply'));
      const want = Buffer.concat(expected);
      const got = await receive(client, want.length);
      await Promise.all(done);
      expect(got.length).toBe(want.length);
      expect(got.equals(want)).toBe(true);
    } finally {
      close();
    }
  });

  it('a reader that stops reading: the rest goes through the stream, and all of it arrives once it reads again', async () => {
    const { server, client, close } = await unixPair();
    try {
      client.pause(); // the kernel buffers fill; nothing more is taken
      const writer = new ReplyWriter(server, silentLogger, fileRepliesFor(server));
      const position = 8192;
      const length = 12 * 1024 * 1024; // far more than both sockets' buffers hold
      const rests: Array<[number, number]> = [];
      let restAsked!: () => void;
      const asked = new Promise<void>((r) => (restAsked = r));
      const header = Buffer.from('HEADER');
      const sent = writer.sendFile(header, { fd, position }, length, async (from, n) => {
        rests.push([from, n]);
        restAsked();
        return readRestFromFile(position)(from, n);
      });
      const after = Buffer.from('next reply');
      const afterSent = new Promise<void>((r) => writer.send([after], r));
      await asked; // the send stalled and handed over the rest
      expect(rests.length).toBe(1);
      const [from, n] = rests[0]!;
      expect(from).toBeGreaterThan(0); // part of it went out by sendfile before the stall
      expect(from + n).toBe(length);
      const want = Buffer.concat([header, content.subarray(position, position + length), after]);
      const got = receive(client, want.length);
      client.resume();
      const bytes = await got;
      await Promise.all([sent, afterSent]);
      expect(bytes.equals(want)).toBe(true);
    } finally {
      close();
    }
  });

  it('a reader that leaves during a file send: the send ends, the socket is closed, later replies count as handed over', async () => {
    const { server, client, close } = await unixPair();
    try {
      client.pause();
      const writer = new ReplyWriter(server, silentLogger, fileRepliesFor(server));
      let restAsked!: () => void;
      const asked = new Promise<void>((r) => (restAsked = r));
      const sent = writer.sendFile(Buffer.from('H'), { fd, position: 0 }, 12 * 1024 * 1024, async (from, n) => {
        restAsked();
        return readRestFromFile(0)(from, n);
      });
      const later = new Promise<void>((r) => writer.send([Buffer.from('later')], r));
      await asked;
      client.destroy();
      await Promise.all([sent, later]); // both settle: nothing waits for a reader that is gone
      await new Promise<void>((r) => (server.destroyed ? r() : server.once('close', () => r())));
      expect(server.destroyed).toBe(true);
    } finally {
      close();
    }
  });

  it('offers no file replies on a stream without a descriptor of its own', async () => {
    const { PassThrough } = await import('node:stream');
    expect(socketDescriptor(new PassThrough())).toBeUndefined();
  });
});

const records = tlsRecordFunctions();

/** Two TLS record streams talking over a Unix socket pair: ours (the server's side) and the peer's. */
async function recordStreamPair(): Promise<{ client: net.Socket; ours: TlsRecordStream; peer: TlsRecordStream; close: () => void }> {
  const { server, client, close } = await unixPair();
  const suite = tls13Suite('TLS_AES_128_GCM_SHA256')!;
  const [s1, s2] = [crypto.randomBytes(32), crypto.randomBytes(32)];
  const keys = (tx: Buffer, rx: Buffer) => ({ tx: new TrafficKeys(records!, suite, tx, { seal: true }), rx: new TrafficKeys(records!, suite, rx, { seal: false }), pending: Buffer.alloc(0) });
  return { client, ours: new TlsRecordStream(server, keys(s1, s2)), peer: new TlsRecordStream(client, keys(s2, s1)), close };
}

describe.skipIf(!records)("ReplyWriter on rebound's TLS record stream", () => {
  it("a tick's buffer replies leave as one batch, in order with file replies; unsentBytes counts them until the socket took them", async () => {
    const { ours, peer, close } = await recordStreamPair();
    try {
      const writer = new ReplyWriter(ours, silentLogger, fileRepliesFor(ours));
      expect(writer.canSendFiles).toBe(true);
      const { expected, done, buffer, file } = replyLog(writer);
      for (let i = 0; i < 40; i++) buffer(Buffer.from(`small reply ${i};`));
      const batch = expected.reduce((n, b) => n + b.length, 0);
      expect(writer.unsentBytes).toBe(batch); // collected for the end of the tick
      file(Buffer.from('file reply:'), 8192, 200_000);
      buffer(Buffer.from('after the file reply'));
      const want = Buffer.concat(expected);
      const got = receive(peer as unknown as net.Socket, want.length);
      await Promise.all(done);
      expect(writer.unsentBytes).toBe(0);
      expect((await got).equals(want)).toBe(true);
    } finally {
      close();
    }
  });

  it('a batch larger than the socket takes at once: the rest waits in the stream, counts in unsentBytes, and arrives whole and in order', async () => {
    const { client, ours, peer, close } = await recordStreamPair();
    try {
      client.pause(); // nothing is read until `receive` below
      const writer = new ReplyWriter(ours, silentLogger, fileRepliesFor(ours));
      // 100 replies of 4 KiB: one batch, more than a Unix socket's default send buffer (208 KiB).
      const { expected, done, buffer } = replyLog(writer);
      for (let i = 0; i < 100; i++) buffer(crypto.randomBytes(4096));
      await new Promise((r) => setImmediate(r)); // the batch left at the end of the tick
      expect(writer.unsentBytes).toBeGreaterThan(0);
      expect(writer.unsentBytes).toBeLessThan(100 * 4096 + 7 * 22);
      const want = Buffer.concat(expected);
      const got = receive(peer as unknown as net.Socket, want.length);
      await Promise.all(done);
      expect(writer.unsentBytes).toBe(0);
      expect((await got).equals(want)).toBe(true);
    } finally {
      close();
    }
  });
});
