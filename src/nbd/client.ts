/**
 * NbdClient: rebound's own NBD client, under blockdev/base/nbd-client.ts (NBD backup sources,
 * restore and migration targets) and in tests.
 * Fixed newstyle, structured replies, meta contexts (base:allocation, qemu:dirty-bitmap:NAME),
 * NBD_OPT_GO, many requests in flight with replies matched by cookie.
 *
 * Errors: a request the server refuses rejects with a BlockError carrying the server's error
 * (NBD errno mapped back to a POSIX code) and message; the connection stays usable. A broken
 * connection rejects every pending request with EIO and the client is unusable afterwards.
 */
import net from 'node:net';
import { BlockError, type BlockErrorCode } from '../errors.js';
import { enlargeSendBuffer, UNIX_SEND_BUFFER } from '../native/socket-buffer.js';
import { ByteReader, ConnectionClosed } from './byte-reader.js';
import {
  decodeOptionReplyHeader,
  encodeGoData,
  encodeMetaContextQuery,
  encodeOption,
  encodeRequest,
  readU64,
} from './messages.js';
import {
  ChunkType,
  Cmd,
  CmdFlag,
  Info,
  NbdErrno,
  Opt,
  ReplyFlag,
  Rep,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  TFlag,
} from './protocol.js';

/** Where an NBD export is: a TCP address or a Unix socket, and the export name. */
export type NbdEndpoint = { host: string; port: number; exportName: string } | { socket: string; exportName: string };

/** Whether a disk source or target is an NBD URI (nbd:// or nbd+unix://) rather than a path. */
export function isNbdUri(s: string): boolean {
  return /^nbd(\+unix)?:\/\//.test(s);
}

/** Parses nbd://HOST[:PORT]/NAME and nbd+unix:///NAME?socket=PATH. */
export function parseNbdUri(uri: string): NbdEndpoint {
  const u = new URL(uri);
  const name = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (u.protocol === 'nbd:') return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 10809), exportName: name };
  if (u.protocol === 'nbd+unix:') {
    const socket = u.searchParams.get('socket');
    if (!socket) throw new TypeError(`${uri}: nbd+unix URI needs ?socket=PATH`);
    return { socket, exportName: name };
  }
  throw new TypeError(`${uri}: not an nbd:// or nbd+unix:// URI`);
}

/**
 * NBD URIs (RFC-style, as libnbd and QEMU accept them) under which an export is reachable; with
 * the server's TLS on (`nbdTls` on or require) the TLS forms `nbds://` and `nbds+unix://`, which
 * libnbd clients complete with `?tls-certificates=DIR` or a PSK (docs/security.md).
 */
export function nbdUris(name: string, ep: { nbd: string[]; nbdSocket: string[]; nbdTls?: NbdTlsMode }): string[] {
  const enc = encodeURI(name);
  const s = ep.nbdTls === 'on' || ep.nbdTls === 'require' ? 's' : '';
  return [
    ...ep.nbd.map((a) => `nbd${s}://${a}/${enc}`),
    ...ep.nbdSocket.map((p) => `nbd${s}+unix:///${enc}?socket=${encodeURIComponent(p)}`),
  ];
}

/** The NBD server's TLS mode, as the nbdTls setting says. */
export type NbdTlsMode = 'off' | 'on' | 'require';

export interface NbdClientOptions {
  /** Meta contexts to negotiate, e.g. ['base:allocation', 'qemu:dirty-bitmap:b0']. */
  metaContexts?: string[];
  connectTimeoutMs?: number;
}

export interface BlockStatusDescriptor {
  length: number;
  flags: number;
}

const ERRNO_TO_CODE: Record<number, BlockErrorCode> = {
  [NbdErrno.EPERM]: 'EPERM',
  [NbdErrno.EIO]: 'EIO',
  [NbdErrno.EINVAL]: 'EINVAL',
  [NbdErrno.ENOSPC]: 'ENOSPC',
  [NbdErrno.EOVERFLOW]: 'EOVERFLOW',
  [NbdErrno.ENOTSUP]: 'ENOTSUP',
  [NbdErrno.ESHUTDOWN]: 'ESHUTDOWN',
};

interface Pending {
  type: number;
  offset: number;
  /** READ: where the data goes. */
  dst?: Uint8Array;
  /** BLOCK_STATUS: descriptors per context id. */
  status?: Map<number, BlockStatusDescriptor[]>;
  error?: BlockError;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class NbdClient {
  readonly size: number;
  readonly transmissionFlags: number;
  /** Negotiated meta contexts: name -> id. */
  readonly metaContexts: Map<string, number>;
  readonly blockSize: { min: number; preferred: number; max: number };
  readonly #socket: net.Socket;
  readonly #reader: ByteReader;
  readonly #pending = new Map<bigint, Pending>();
  #nextCookie = 1n;
  #broken: Error | undefined;
  #idleWaiters: Array<() => void> = [];

  private constructor(
    socket: net.Socket,
    reader: ByteReader,
    info: { size: number; flags: number; meta: Map<string, number>; blockSize: { min: number; preferred: number; max: number } },
  ) {
    this.#socket = socket;
    this.#reader = reader;
    this.size = info.size;
    this.transmissionFlags = info.flags;
    this.metaContexts = info.meta;
    this.blockSize = info.blockSize;
    void this.#receiveLoop();
  }

  static async connect(endpoint: NbdEndpoint | string, opts: NbdClientOptions = {}): Promise<NbdClient> {
    const t = typeof endpoint === 'string' ? parseNbdUri(endpoint) : endpoint;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = 'socket' in t ? net.connect(t.socket) : net.connect(t.port, t.host);
      const timer = setTimeout(() => s.destroy(new Error('connect timed out')), opts.connectTimeoutMs ?? 10_000);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(new BlockError('EIO', `cannot connect to NBD server: ${e.message}`, { cause: e }));
      });
    });
    socket.setNoDelay(true);
    // Writes to a local server (a migration or restore target) leave in fewer pieces (native/socket-buffer.ts).
    if ('socket' in t) enlargeSendBuffer(socket, UNIX_SEND_BUFFER);
    const reader = new ByteReader(socket);
    try {
      const info = await handshake(socket, reader, t.exportName, opts.metaContexts ?? []);
      return new NbdClient(socket, reader, info);
    } catch (err) {
      socket.destroy();
      if (err instanceof ConnectionClosed) throw new BlockError('EIO', `NBD handshake failed: ${err.message}`);
      throw err;
    }
  }

  get readOnly(): boolean {
    return (this.transmissionFlags & TFlag.READ_ONLY) !== 0;
  }

  get canMultiConn(): boolean {
    return (this.transmissionFlags & TFlag.CAN_MULTI_CONN) !== 0;
  }

  get inflight(): number {
    return this.#pending.size;
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    return this.#request(Cmd.READ, 0, offset, dst.length, undefined, { dst });
  }

  write(src: Uint8Array, offset: number, opts: { fua?: boolean } = {}): Promise<void> {
    return this.#request(Cmd.WRITE, opts.fua ? CmdFlag.FUA : 0, offset, src.length, src);
  }

  flush(): Promise<void> {
    return this.#request(Cmd.FLUSH, 0, 0, 0);
  }

  trim(offset: number, length: number, opts: { fua?: boolean } = {}): Promise<void> {
    return this.#request(Cmd.TRIM, opts.fua ? CmdFlag.FUA : 0, offset, length);
  }

  zero(offset: number, length: number, opts: { fua?: boolean; noHole?: boolean; fast?: boolean } = {}): Promise<void> {
    const flags = (opts.fua ? CmdFlag.FUA : 0) | (opts.noHole ? CmdFlag.NO_HOLE : 0) | (opts.fast ? CmdFlag.FAST_ZERO : 0);
    return this.#request(Cmd.WRITE_ZEROES, flags, offset, length);
  }

  /** BLOCK_STATUS: descriptors for each negotiated context (name -> descriptors). */
  async blockStatus(offset: number, length: number, opts: { reqOne?: boolean } = {}): Promise<Map<string, BlockStatusDescriptor[]>> {
    const status = new Map<number, BlockStatusDescriptor[]>();
    await this.#request(Cmd.BLOCK_STATUS, opts.reqOne ? CmdFlag.REQ_ONE : 0, offset, length, undefined, { status });
    const byName = new Map<string, BlockStatusDescriptor[]>();
    for (const [name, id] of this.metaContexts) byName.set(name, status.get(id) ?? []);
    return byName;
  }

  /** Sends NBD_CMD_DISC after in-flight requests complete, and closes. */
  async close(): Promise<void> {
    if (this.#broken) return;
    if (this.#pending.size) await new Promise<void>((r) => this.#idleWaiters.push(r));
    if (!this.#socket.destroyed) {
      this.#socket.write(encodeRequest(0, Cmd.DISC, 0n, 0, 0));
      this.#socket.end();
    }
    this.#broken = new BlockError('ESHUTDOWN', 'NBD client closed');
  }

  destroy(): void {
    this.#fail(new BlockError('EIO', 'NBD client destroyed'));
    this.#socket.destroy();
  }

  #request(type: number, flags: number, offset: number, length: number, payload?: Uint8Array, extra: Partial<Pending> = {}): Promise<void> {
    if (this.#broken) return Promise.reject(new BlockError('EIO', `NBD connection is down: ${this.#broken.message}`));
    const cookie = this.#nextCookie++;
    return new Promise<void>((resolve, reject) => {
      this.#pending.set(cookie, { type, offset, resolve, reject, ...extra });
      this.#socket.cork();
      this.#socket.write(encodeRequest(flags, type, cookie, offset, length));
      if (payload) this.#socket.write(payload);
      this.#socket.uncork();
    });
  }

  async #receiveLoop(): Promise<void> {
    try {
      for (;;) {
        const head = await this.#reader.readExact(4);
        const magic = head.readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) {
          const rest = await this.#reader.readExact(12);
          const error = rest.readUInt32BE(0);
          const p = this.#take(rest.readBigUInt64BE(4));
          if (error) p.reject(toBlockError(error, 'request failed'));
          else {
            if (p.type === Cmd.READ && p.dst) p.dst.set(await this.#reader.readExact(p.dst.length));
            p.resolve();
          }
        } else if (magic === STRUCTURED_REPLY_MAGIC) {
          const rest = await this.#reader.readExact(16);
          const flags = rest.readUInt16BE(0);
          const type = rest.readUInt16BE(2);
          const cookie = rest.readBigUInt64BE(4);
          const length = rest.readUInt32BE(12);
          const payload = length ? await this.#reader.readExact(length) : Buffer.alloc(0);
          const p = this.#pending.get(cookie);
          if (!p) throw new Error(`reply for unknown cookie ${cookie}`);
          this.#applyChunk(p, type, payload);
          if (flags & ReplyFlag.DONE) {
            this.#take(cookie);
            if (p.error) p.reject(p.error);
            else p.resolve();
          }
        } else {
          throw new Error(`bad reply magic 0x${magic.toString(16)}`);
        }
      }
    } catch (err) {
      this.#fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #applyChunk(p: Pending, type: number, payload: Buffer): void {
    switch (type) {
      case ChunkType.OFFSET_DATA: {
        const off = readU64(payload, 0) - p.offset;
        p.dst?.set(payload.subarray(8), off);
        break;
      }
      case ChunkType.OFFSET_HOLE: {
        const off = readU64(payload, 0) - p.offset;
        p.dst?.fill(0, off, off + payload.readUInt32BE(8));
        break;
      }
      case ChunkType.BLOCK_STATUS: {
        const id = payload.readUInt32BE(0);
        const list: BlockStatusDescriptor[] = [];
        for (let i = 4; i + 8 <= payload.length; i += 8) list.push({ length: payload.readUInt32BE(i), flags: payload.readUInt32BE(i + 4) });
        p.status?.set(id, list);
        break;
      }
      case ChunkType.NONE:
        break;
      default:
        if (type & 0x8000) {
          const msgLen = payload.length >= 6 ? payload.readUInt16BE(4) : 0;
          p.error ??= toBlockError(payload.readUInt32BE(0), payload.toString('utf8', 6, 6 + msgLen) || 'request failed');
        }
    }
  }

  #take(cookie: bigint): Pending {
    const p = this.#pending.get(cookie);
    if (!p) throw new Error(`reply for unknown cookie ${cookie}`);
    this.#pending.delete(cookie);
    if (this.#pending.size === 0) this.#wakeIdle();
    return p;
  }

  #wakeIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }

  #fail(err: Error): void {
    if (!this.#broken) this.#broken = err;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(new BlockError('EIO', `NBD connection lost: ${err.message}`, { cause: err }));
    this.#wakeIdle();
  }
}

function toBlockError(errno: number, message: string): BlockError {
  return new BlockError(ERRNO_TO_CODE[errno] ?? 'EINVAL', `server: ${message}`);
}

async function handshake(
  socket: net.Socket,
  reader: ByteReader,
  name: string,
  metaQueries: string[],
): Promise<{ size: number; flags: number; meta: Map<string, number>; blockSize: { min: number; preferred: number; max: number } }> {
  const greeting = await reader.readExact(18);
  if (greeting.toString('latin1', 0, 16) !== 'NBDMAGICIHAVEOPT') throw new BlockError('EIO', 'not a fixed-newstyle NBD server');
  const serverFlags = greeting.readUInt16BE(16);
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(serverFlags & 3);
  socket.write(clientFlags);

  const option = async (opt: number, data?: Buffer): Promise<Array<{ type: number; data: Buffer }>> => {
    socket.write(encodeOption(opt, data));
    const out: Array<{ type: number; data: Buffer }> = [];
    for (;;) {
      const h = decodeOptionReplyHeader(await reader.readExact(20));
      const d = h.length ? await reader.readExact(h.length) : Buffer.alloc(0);
      out.push({ type: h.replyType, data: d });
      if (h.replyType === Rep.ACK || h.replyType >= 0x80000000) return out;
    }
  };
  const fail = (what: string, r: { type: number; data: Buffer }): never => {
    throw new BlockError('EIO', `${what} refused by the server (0x${r.type.toString(16)}${r.data.length ? ': ' + r.data.toString() : ''})`);
  };

  const sr = await option(Opt.STRUCTURED_REPLY);
  const structured = sr[sr.length - 1]!.type === Rep.ACK;
  const meta = new Map<string, number>();
  if (metaQueries.length) {
    if (!structured) throw new BlockError('EIO', 'server lacks structured replies; meta contexts unavailable');
    const replies = await option(Opt.SET_META_CONTEXT, encodeMetaContextQuery(name, metaQueries));
    const last = replies[replies.length - 1]!;
    if (last.type !== Rep.ACK) fail('SET_META_CONTEXT', last);
    for (const r of replies) if (r.type === Rep.META_CONTEXT) meta.set(r.data.toString('utf8', 4), r.data.readUInt32BE(0));
    for (const q of metaQueries) if (!meta.has(q)) throw new BlockError('EIO', `server does not offer meta context '${q}'`);
  }
  const go = await option(Opt.GO, encodeGoData(name, [Info.BLOCK_SIZE]));
  const last = go[go.length - 1]!;
  if (last.type !== Rep.ACK) fail(`export '${name}'`, last);
  let size = -1;
  let flags = 0;
  let blockSize = { min: 1, preferred: 4096, max: 32 * 1024 * 1024 };
  for (const r of go) {
    if (r.type !== Rep.INFO) continue;
    const kind = r.data.readUInt16BE(0);
    if (kind === Info.EXPORT) {
      size = readU64(r.data, 2);
      flags = r.data.readUInt16BE(10);
    } else if (kind === Info.BLOCK_SIZE) {
      blockSize = { min: r.data.readUInt32BE(2), preferred: r.data.readUInt32BE(6), max: r.data.readUInt32BE(10) };
    }
  }
  if (size < 0) throw new BlockError('EIO', 'server sent no export size');
  return { size, flags, meta, blockSize };
}
