/**
 * Fixed-newstyle handshake and option haggling (proto.md §Handshake).
 *
 * Implemented options: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT,
 * SET_META_CONTEXT (base:allocation) and STARTTLS. Every other option (EXTENDED_HEADERS,
 * PEEK_EXPORT, unknown numbers) is answered ERR_UNSUP after its data is consumed, and haggling goes on.
 *
 * TLS (as nbdkit): without TLS configured STARTTLS gets ERR_POLICY. In 'require' mode every option
 * but STARTTLS and ABORT gets ERR_TLS_REQD until the upgrade (so LIST reveals nothing), and
 * EXPORT_NAME, which has no error reply, closes the connection. After STARTTLS the options go on
 * over TLS with everything negotiated before forgotten (structured replies, meta contexts); a
 * second STARTTLS gets ERR_INVALID. Plain-text bytes the client sent behind its STARTTLS (before
 * our ACK) are a protocol violation: they would otherwise be read as if they came through TLS.
 *
 * Access: once the connection has an identity, `access` decides which exports it may see; a refused
 * export is answered exactly like an absent one (ERR_UNKNOWN, left out of LIST) and logged; a
 * read-only grant makes the export read-only for this connection.
 *
 * Hard disconnects happen only where the spec allows them: unknown client flags, a bad option
 * magic, an EXPORT_NAME we cannot answer, absurdly large options, or too many options (DoS).
 * Everything else gets an error reply and the client may try again.
 */
import type { CatalogEntry } from '../exports/catalog.js';
import type { Logger } from '../util/log.js';
import type { ByteReader } from './byte-reader.js';
import {
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoDescription,
  encodeInfoExport,
  encodeInfoName,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerReply,
} from './messages.js';
import {
  BASE_ALLOCATION,
  CLIENT_FLAG_FIXED_NEWSTYLE,
  CLIENT_FLAG_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  Info,
  KNOWN_CLIENT_FLAGS,
  MAX_NAME_BYTES,
  MAX_OPTION_BYTES,
  MAX_OPTION_DISCARD_BYTES,
  MAX_PAYLOAD,
  Opt,
  optionName,
  Rep,
  TFlag,
} from './protocol.js';
import type { Capabilities } from '../blockdev/types.js';
import { identityText, type AccessDecision, type TlsIdentity } from '../tls/access.js';

/** Context id of base:allocation in BLOCK_STATUS replies. */
export const BASE_ALLOCATION_ID = 1;
const MAX_OPTIONS_PER_CONNECTION = 4096;

/** What the handshake needs of the catalog (its NBD view). */
export interface ExportLookup {
  get(name: string): CatalogEntry | undefined;
  /** Every name a client may ask for (LIST), with its entry. */
  names(): Array<{ name: string; entry: CatalogEntry }>;
}

/** The outcome of a successful handshake: the chosen export and what was agreed. */
export interface Negotiated {
  /** The name the client asked for ('' for the default export). */
  name: string;
  export: CatalogEntry;
  structuredReplies: boolean;
  /** Selected meta context ids -> names. */
  metaContexts: Map<number, string>;
  transmissionFlags: number;
  /** The connection was upgraded with STARTTLS. */
  tls: boolean;
  /** Who the TLS peer is (verified certificate or PSK username); undefined if anonymous. */
  identity?: TlsIdentity;
}

/** The client broke a MUST of the protocol; the connection is dropped. */
export class ProtocolViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolViolation';
  }
}

export function transmissionFlags(caps: Capabilities, structuredReplies: boolean): number {
  let f = TFlag.HAS_FLAGS;
  if (!caps.canWrite) f |= TFlag.READ_ONLY;
  if (caps.canFlush) f |= TFlag.SEND_FLUSH;
  if (caps.canFua) f |= TFlag.SEND_FUA;
  if (caps.canWrite && caps.canTrim) f |= TFlag.SEND_TRIM;
  if (caps.canWrite && caps.canZero) {
    f |= TFlag.SEND_WRITE_ZEROES;
    if (caps.canFastZero) f |= TFlag.SEND_FAST_ZERO;
  }
  if (structuredReplies) f |= TFlag.SEND_DF;
  if (caps.canMultiConn) f |= TFlag.CAN_MULTI_CONN;
  return f;
}

export interface HandshakeContext {
  reader: ByteReader;
  send: (b: Buffer) => void;
  exports: ExportLookup;
  log: Logger;
  shuttingDown: () => boolean;
  /** TLS settings; absent: TLS off (STARTTLS gets ERR_POLICY). */
  tls?: {
    mode: 'on' | 'require';
    /**
     * Called right after the STARTTLS ACK was queued: runs the TLS handshake and returns the
     * reader and writer of the encrypted stream. Rejects (connection lost, peer refused) end the
     * handshake with that error.
     */
    start: () => Promise<{ reader: ByteReader; send: (b: Buffer) => void; identity: TlsIdentity | undefined }>;
  };
  /** Which exports the connection's identity may open; absent: all, as published. */
  access?: (identity: TlsIdentity | undefined, entry: CatalogEntry) => AccessDecision;
  /** Logs a refusal (rate-limited by the server); default: a warning on `log`. */
  refused?: (msg: string, fields: Record<string, unknown>) => void;
}

/**
 * Runs the handshake. Resolves with the negotiated session, or undefined when the client sent
 * NBD_OPT_ABORT. Rejects with ProtocolViolation (drop the connection) or ConnectionClosed.
 */
export async function negotiate(ctx: HandshakeContext): Promise<Negotiated | undefined> {
  const { log } = ctx;
  let { reader, send } = ctx;
  send(encodeGreeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
  const clientFlags = (await reader.readExact(4)).readUInt32BE(0);
  if (clientFlags & ~KNOWN_CLIENT_FLAGS) {
    throw new ProtocolViolation(`unknown client flags 0x${clientFlags.toString(16)}`);
  }
  const fixed = (clientFlags & CLIENT_FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (clientFlags & CLIENT_FLAG_NO_ZEROES) !== 0;

  let structuredReplies = false;
  // Contexts chosen by SET_META_CONTEXT, and the export they were chosen for.
  let selected: { exportName: string; contexts: Map<number, string> } | undefined;
  let usingTls = false;
  let identity: TlsIdentity | undefined;

  const decide = (entry: CatalogEntry): AccessDecision =>
    ctx.access ? ctx.access(identity, entry) : { allowed: true, readOnly: !entry.capabilities().canWrite };
  /** The entry a name opens for this connection, or undefined (absent, or refused: logged). */
  const lookup = (name: string): { entry: CatalogEntry; readOnly: boolean } | undefined => {
    const entry = ctx.exports.get(name);
    if (!entry) return undefined;
    const d = decide(entry);
    if (!d.allowed) {
      (ctx.refused ?? ((m, f) => log.warn(m, f)))('NBD export refused: the client identity has no access to it', { identity: identityText(identity), export: clip(name) });
      return undefined;
    }
    return { entry, readOnly: d.readOnly };
  };
  const flagsFor = (caps: Capabilities, readOnly: boolean): number =>
    transmissionFlags(readOnly && caps.canWrite ? { ...caps, canWrite: false } : caps, structuredReplies);
  const done = (name: string, exp: CatalogEntry, flags: number): Negotiated => ({
    name,
    export: exp,
    structuredReplies,
    metaContexts: metaFor(selected, exp, ctx),
    transmissionFlags: flags,
    tls: usingTls,
    ...(identity ? { identity } : {}),
  });

  for (let count = 0; ; count++) {
    if (count >= MAX_OPTIONS_PER_CONNECTION) throw new ProtocolViolation('too many options');
    const head = await reader.readExact(16);
    if (head.readBigUInt64BE(0) !== IHAVEOPT) throw new ProtocolViolation('bad option magic');
    const option = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    const reply = (type: number, data?: Uint8Array): void => send(encodeOptionReply(option, type, data));
    const fail = (type: number, message: string): void => {
      log.debug('option refused', { option: optionName(option), reply: type >>> 0, message });
      reply(type, Buffer.from(message, 'utf8'));
    };

    if (!fixed && option !== Opt.EXPORT_NAME) {
      throw new ProtocolViolation(`option ${optionName(option)} from a client without fixed newstyle`);
    }
    if (option === Opt.EXPORT_NAME ? length > MAX_NAME_BYTES : length > MAX_OPTION_BYTES) {
      if (option === Opt.EXPORT_NAME || length > MAX_OPTION_DISCARD_BYTES) {
        throw new ProtocolViolation(`option ${optionName(option)} with ${length} bytes of data`);
      }
      await reader.skip(length);
      fail(Rep.ERR_TOO_BIG, 'option data too large');
      continue;
    }
    const data = length > 0 ? await reader.readExact(length) : Buffer.alloc(0);
    log.debug('option', { option: optionName(option), length });

    if (ctx.tls?.mode === 'require' && !usingTls && option !== Opt.STARTTLS && option !== Opt.ABORT) {
      if (option === Opt.EXPORT_NAME) throw new ProtocolViolation('NBD_OPT_EXPORT_NAME before STARTTLS; TLS is required');
      fail(Rep.ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
      continue;
    }

    switch (option) {
      case Opt.EXPORT_NAME: {
        const name = data.toString('utf8');
        const found = ctx.shuttingDown() ? undefined : lookup(name);
        if (!found) {
          // EXPORT_NAME has no error reply: the spec says close.
          throw new ProtocolViolation(ctx.shuttingDown() ? 'server is shutting down' : `unknown export '${clip(name)}'`);
        }
        const exp = found.entry;
        const flags = flagsFor(exp.capabilities(), found.readOnly);
        send(encodeExportNameReply(exp.size, flags, noZeroes));
        return done(name, exp, flags);
      }

      case Opt.STARTTLS: {
        if (length !== 0) {
          fail(Rep.ERR_INVALID, 'STARTTLS takes no data');
          break;
        }
        if (!ctx.tls) {
          fail(Rep.ERR_POLICY, 'TLS is not enabled on this server');
          break;
        }
        if (usingTls) {
          fail(Rep.ERR_INVALID, 'TLS is already in use');
          break;
        }
        if (reader.available > 0) {
          throw new ProtocolViolation('the client sent plain-text data behind NBD_OPT_STARTTLS');
        }
        reply(Rep.ACK);
        const up = await ctx.tls.start();
        reader = up.reader;
        send = up.send;
        usingTls = true;
        identity = up.identity;
        // Nothing negotiated in plain text survives the upgrade.
        structuredReplies = false;
        selected = undefined;
        log.debug('TLS established', { identity: identityText(identity) });
        break;
      }

      case Opt.ABORT:
        reply(Rep.ACK);
        return undefined;

      case Opt.LIST: {
        if (length !== 0) {
          fail(Rep.ERR_INVALID, 'LIST takes no data');
          break;
        }
        for (const { name, entry } of ctx.exports.names()) {
          if (decide(entry).allowed) reply(Rep.SERVER, encodeServerReply(name, entry.description));
        }
        reply(Rep.ACK);
        break;
      }

      case Opt.STRUCTURED_REPLY:
        if (length !== 0) {
          fail(Rep.ERR_INVALID, 'STRUCTURED_REPLY takes no data');
          break;
        }
        structuredReplies = true;
        reply(Rep.ACK);
        break;

      case Opt.INFO:
      case Opt.GO: {
        const req = parseGoData(data);
        if (!req) {
          fail(Rep.ERR_INVALID, 'malformed INFO/GO request');
          break;
        }
        if (ctx.shuttingDown()) {
          fail(Rep.ERR_SHUTDOWN, 'server is shutting down');
          break;
        }
        const found = lookup(req.name);
        if (!found) {
          fail(Rep.ERR_UNKNOWN, `unknown export '${clip(req.name)}'`);
          break;
        }
        const exp = found.entry;
        const caps = exp.capabilities();
        const flags = flagsFor(caps, found.readOnly);
        reply(Rep.INFO, encodeInfoExport(exp.size, flags));
        if (req.infos.includes(Info.NAME)) reply(Rep.INFO, encodeInfoName(req.name || exp.name));
        if (req.infos.includes(Info.DESCRIPTION) && exp.description) reply(Rep.INFO, encodeInfoDescription(exp.description));
        if (req.infos.includes(Info.BLOCK_SIZE) || caps.blockSize.min > 1) {
          const { min, preferred, max } = caps.blockSize;
          reply(Rep.INFO, encodeInfoBlockSize(min, Math.max(preferred, min, 512), Math.min(max, MAX_PAYLOAD)));
        }
        reply(Rep.ACK);
        if (option === Opt.GO) return done(req.name, exp, flags);
        break;
      }

      case Opt.LIST_META_CONTEXT:
      case Opt.SET_META_CONTEXT: {
        const isSet = option === Opt.SET_META_CONTEXT;
        if (isSet && !structuredReplies) {
          fail(Rep.ERR_INVALID, 'negotiate structured replies first');
          break;
        }
        const q = parseMetaQuery(data);
        if (!q) {
          fail(Rep.ERR_INVALID, 'malformed meta context request');
          break;
        }
        if (!lookup(q.exportName)) {
          fail(Rep.ERR_UNKNOWN, `unknown export '${clip(q.exportName)}'`);
          break;
        }
        const matches = q.queries.length === 0 && !isSet
          ? [BASE_ALLOCATION]
          : q.queries.some((s) => s === BASE_ALLOCATION || (!isSet && s === 'base:'))
            ? [BASE_ALLOCATION]
            : [];
        for (const name of matches) reply(Rep.META_CONTEXT, encodeMetaContextReply(BASE_ALLOCATION_ID, name));
        if (isSet) {
          selected = { exportName: q.exportName, contexts: new Map(matches.map((n) => [BASE_ALLOCATION_ID, n])) };
        }
        reply(Rep.ACK);
        break;
      }

      default:
        // EXTENDED_HEADERS, PEEK_EXPORT and unknown options.
        fail(Rep.ERR_UNSUP, `option ${optionName(option)} is not supported`);
    }
  }
}

/** Contexts apply only to the export they were selected for. */
function metaFor(
  selected: { exportName: string; contexts: Map<number, string> } | undefined,
  exp: CatalogEntry,
  ctx: HandshakeContext,
): Map<number, string> {
  if (!selected) return new Map();
  return ctx.exports.get(selected.exportName) === exp ? selected.contexts : new Map();
}

function parseGoData(data: Buffer): { name: string; infos: number[] } | undefined {
  if (data.length < 6) return undefined;
  const nameLen = data.readUInt32BE(0);
  if (nameLen > MAX_NAME_BYTES || 4 + nameLen + 2 > data.length) return undefined;
  const name = data.toString('utf8', 4, 4 + nameLen);
  const n = data.readUInt16BE(4 + nameLen);
  if (data.length !== 4 + nameLen + 2 + 2 * n) return undefined;
  const infos: number[] = [];
  for (let i = 0; i < n; i++) infos.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { name, infos };
}

function parseMetaQuery(data: Buffer): { exportName: string; queries: string[] } | undefined {
  let pos = 0;
  const str = (): string | undefined => {
    if (pos + 4 > data.length) return undefined;
    const len = data.readUInt32BE(pos);
    pos += 4;
    if (len > MAX_NAME_BYTES || pos + len > data.length) return undefined;
    const s = data.toString('utf8', pos, pos + len);
    pos += len;
    return s;
  };
  const exportName = str();
  if (exportName === undefined || pos + 4 > data.length) return undefined;
  const n = data.readUInt32BE(pos);
  pos += 4;
  const queries: string[] = [];
  for (let i = 0; i < n; i++) {
    const q = str();
    if (q === undefined) return undefined;
    queries.push(q);
  }
  if (pos !== data.length) return undefined;
  return { exportName, queries };
}

function clip(name: string): string {
  return name.length > 64 ? name.slice(0, 61) + '...' : name;
}
