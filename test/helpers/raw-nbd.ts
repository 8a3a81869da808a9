/**
 * RawNbdClient: a byte-level NBD client for protocol tests. It sends exactly the frames a test
 * builds (valid or not) and reads replies with timeouts, so a test can show how the server answers
 * malformed input and whether the connection survives.
 */
import net from 'node:net';
import { ByteReader } from '../../src/nbd/byte-reader.js';
import {
  encodeGoData,
  encodeMetaContextQuery,
  encodeOption,
  encodeRequest,
} from '../../src/nbd/messages.js';
import { Opt, Rep } from '../../src/nbd/protocol.js';

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface Reply {
  structured: boolean;
  error: number;
  cookie: bigint;
  flags: number;
  type: number;
  /** Structured: the chunk payload. Simple: the data that followed (if readLength given). */
  payload: Buffer;
}

export class RawNbdClient {
  readonly socket: net.Socket;
  readonly #reader: ByteReader;
  readonly #closed: Promise<void>;
  #isClosed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#reader = new ByteReader(socket);
    this.#closed = new Promise((resolve) => socket.once('close', () => resolve()));
    this.#closed.then(() => (this.#isClosed = true));
    socket.on('error', () => undefined);
  }

  static connect(target: { port: number } | { path: string }): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const s = 'port' in target ? net.connect(target.port, '127.0.0.1') : net.connect(target.path);
      s.once('connect', () => resolve(new RawNbdClient(s)));
      s.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  send(...bufs: Buffer[]): void {
    for (const b of bufs) this.socket.write(b);
  }

  read(n: number, timeoutMs = 5000): Promise<Buffer> {
    return withTimeout(this.#reader.readExact(n), timeoutMs, `reading ${n} bytes`);
  }

  /** Resolves true if the server closes the connection within the timeout. */
  async closedWithin(timeoutMs = 3000): Promise<boolean> {
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.#closed.then(() => true),
      new Promise<boolean>((res) => (t = setTimeout(() => res(false), timeoutMs))),
    ]);
    clearTimeout(t);
    return r;
  }

  close(): void {
    this.socket.destroy();
  }

  /** Reads the greeting and sends client flags (default FIXED_NEWSTYLE|NO_ZEROES). */
  async greet(clientFlags = 3): Promise<Buffer> {
    const g = await this.read(18);
    const f = Buffer.alloc(4);
    f.writeUInt32BE(clientFlags >>> 0);
    this.send(f);
    return g;
  }

  /** Sends an option and collects replies until the final one (ACK or an error). */
  async option(option: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
    this.send(encodeOption(option, data));
    const replies: OptionReply[] = [];
    for (;;) {
      const head = await this.read(20);
      const r = { option: head.readUInt32BE(8), type: head.readUInt32BE(12), data: await this.read(head.readUInt32BE(16)) };
      replies.push(r);
      if (r.type === Rep.ACK || r.type >= 0x80000000) return replies;
    }
  }

  /** Full handshake up to transmission; returns size and transmission flags. */
  async handshake(
    name: string,
    opts: { structured?: boolean; meta?: boolean } = {},
  ): Promise<{ size: number; flags: number }> {
    await this.greet();
    if (opts.structured ?? true) await this.option(Opt.STRUCTURED_REPLY);
    if (opts.meta) await this.option(Opt.SET_META_CONTEXT, encodeMetaContextQuery(name, ['base:allocation']));
    const replies = await this.option(Opt.GO, encodeGoData(name, [3]));
    const final = replies[replies.length - 1]!;
    if (final.type !== Rep.ACK) throw new Error(`GO failed: 0x${final.type.toString(16)} ${final.data.toString()}`);
    const info = replies.find((r) => r.type === Rep.INFO && r.data.readUInt16BE(0) === 0)!;
    return { size: Number(info.data.readBigUInt64BE(2)), flags: info.data.readUInt16BE(10) };
  }

  request(type: number, opts: { flags?: number; cookie?: bigint; offset?: number; length?: number; payload?: Buffer } = {}): void {
    const len = opts.length ?? opts.payload?.length ?? 0;
    this.send(encodeRequest(opts.flags ?? 0, type, opts.cookie ?? 1n, opts.offset ?? 0, len));
    if (opts.payload) this.send(opts.payload);
  }

  /**
   * Reads one reply: a simple reply (with `simpleReadLength` data bytes if error == 0 and a
   * length is given) or one structured chunk.
   */
  async reply(simpleReadLength = 0, timeoutMs = 5000): Promise<Reply> {
    const magic = (await this.read(4, timeoutMs)).readUInt32BE(0);
    if (magic === 0x67446698) {
      const rest = await this.read(12, timeoutMs);
      const error = rest.readUInt32BE(0);
      const payload = error === 0 && simpleReadLength ? await this.read(simpleReadLength, timeoutMs) : Buffer.alloc(0);
      return { structured: false, error, cookie: rest.readBigUInt64BE(4), flags: 0, type: 0, payload };
    }
    if (magic === 0x668e33ef) {
      const rest = await this.read(16, timeoutMs);
      const length = rest.readUInt32BE(12);
      const payload = await this.read(length, timeoutMs);
      const type = rest.readUInt16BE(2);
      const error = type >= 0x8000 ? payload.readUInt32BE(0) : 0;
      return { structured: true, error, cookie: rest.readBigUInt64BE(4), flags: rest.readUInt16BE(0), type, payload };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** Reads n replies one after the other (simple replies without data, or single chunks). */
  async replies(n: number, timeoutMs = 5000): Promise<Reply[]> {
    const out: Reply[] = [];
    for (let i = 0; i < n; i++) out.push(await this.reply(0, timeoutMs));
    return out;
  }

  /** Reads structured chunks until the one with the DONE flag. */
  async chunks(timeoutMs = 5000): Promise<Reply[]> {
    const out: Reply[] = [];
    for (;;) {
      const r = await this.reply(0, timeoutMs);
      out.push(r);
      if (!r.structured || r.flags & 1) return out;
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => (t = setTimeout(() => reject(new Error(`timeout ${what}`)), ms))),
  ]);
}
