/**
 * TLS for the NBD server, as nbdkit and qemu-nbd do it: the connection starts in plain text and
 * the client upgrades it with NBD_OPT_STARTTLS; the handshake then goes on inside TLS.
 *
 * Credentials: x509 from a certificate directory (cert-dir.ts), TLS-PSK from a psktool file
 * (psk-file.ts), or both at once (a client offering a PSK identity gets PSK, any other the
 * certificate). Versions: TLS 1.3 (x509 and PSK with (EC)DHE, what GnuTLS clients — qemu, libnbd —
 * negotiate by default) and TLS 1.2 (x509 suites, and ECDHE-PSK/DHE-PSK suites; plain PSK without
 * forward secrecy is not offered). Nothing older.
 *
 * Identity: with `verifyPeer` a client must present a certificate signed by ca-cert.pem (not
 * revoked by ca-crl.pem); its subject DN is the identity. A PSK client is identified by its
 * username. Without either, a TLS connection is encrypted but anonymous.
 *
 * Refusals (unknown PSK username, wrong key, missing or untrusted certificate) are logged once
 * each with the reason, and the upgrade rejects with TlsRefused: the caller closes the connection.
 */
import type net from 'node:net';
import tls from 'node:tls';
import { ReboundError, errorText } from '../errors.js';
import { tlsRecordFunctions } from '../native/tls-record.js';
import type { Logger } from '../util/log.js';
import { type CertDir, certDirSecureOptions, loadCertDir } from './cert-dir.js';
import { type PskFile, loadPskFile } from './psk-file.js';
import type { TlsIdentity } from './access.js';
import { RecordTap } from './record-tap.js';
import { type SealBuffers, TlsRecordStream } from './record-stream.js';
import { tls13Suite, TrafficKeys } from './tls13-keys.js';

export type TlsMode = 'off' | 'on' | 'require';
export const TLS_MODES: readonly TlsMode[] = ['off', 'on', 'require'];

/**
 * The TLS 1.3 suites with SHA-256 come first and the server's order wins:
 *  - OpenSSL ties an external PSK to SHA-256, and a handshake that picked TLS_AES_256_GCM_SHA384
 *    (GnuTLS clients list it first) silently drops the PSK and falls back to the certificate, which
 *    a PSK-only client cannot use ("Insufficient credentials");
 *  - AES-128-GCM encrypts about 1.45x as fast as AES-256-GCM (openssl speed, 16 KiB blocks: 3.6 vs
 *    2.5 GB/s here), and every byte of disk data goes through it.
 */
const TLS13_FIRST = ['TLS_AES_128_GCM_SHA256', 'TLS_CHACHA20_POLY1305_SHA256'];
/** TLS 1.2 PSK suites with forward secrecy. */
const PSK_CIPHERS_TLS12 = [
  'ECDHE-PSK-CHACHA20-POLY1305',
  'ECDHE-PSK-AES256-CBC-SHA384',
  'ECDHE-PSK-AES128-CBC-SHA256',
  'DHE-PSK-AES256-GCM-SHA384',
  'DHE-PSK-AES128-GCM-SHA256',
  'DHE-PSK-CHACHA20-POLY1305',
];

export interface NbdTlsSettings {
  nbdTls: TlsMode;
  tlsCertDir: string;
  tlsVerifyPeer: boolean;
  tlsPskFile: string;
}

/** The upgrade failed or the peer was refused; the connection must be closed. */
export class TlsRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsRefused';
  }
}

export interface TlsUpgrade {
  socket: tls.TLSSocket;
  identity: TlsIdentity | undefined;
  /**
   * Once the handshake of the protocol above is over: hands the connection to a TlsRecordStream
   * (record-stream.ts) if it can, or resolves undefined and the TLS socket carries on. `idle` says
   * whether the caller holds no unread data of the TLS socket; call offload() right after the last
   * reply of the handshake was written, before the event loop turns, so that nothing the client
   * sends afterwards reaches the TLS socket.
   */
  offload(idle: () => boolean, buffers?: SealBuffers): Promise<TlsRecordStream | undefined>;
}

export class NbdTls {
  readonly mode: Exclude<TlsMode, 'off'>;
  readonly verifyPeer: boolean;
  readonly certs: CertDir | undefined;
  readonly psk: PskFile | undefined;
  readonly #context: tls.SecureContext;

  constructor(opts: { mode: Exclude<TlsMode, 'off'>; certs?: CertDir; psk?: PskFile; verifyPeer?: boolean }) {
    if (!opts.certs && !opts.psk) throw new ReboundError('ERR_INVALID_ARGUMENT', 'NBD TLS needs --tls-certificates DIR or --tls-psk FILE (or both)');
    if (opts.verifyPeer && !opts.certs) throw new ReboundError('ERR_INVALID_ARGUMENT', '--tls-verify-peer needs --tls-certificates DIR (with ca-cert.pem)');
    if (opts.verifyPeer && !opts.certs?.ca) {
      throw new ReboundError('ERR_TLS_CREDENTIALS', `--tls-verify-peer needs ${opts.certs!.dir}/ca-cert.pem to verify client certificates`);
    }
    this.mode = opts.mode;
    this.verifyPeer = opts.verifyPeer ?? false;
    this.certs = opts.certs;
    this.psk = opts.psk;
    const defaults = tls.DEFAULT_CIPHERS.split(':').filter((c) => !TLS13_FIRST.includes(c));
    const ciphers = opts.psk
      ? [...TLS13_FIRST, ...defaults.filter((c) => c !== '!PSK'), ...PSK_CIPHERS_TLS12, '!kPSK'].join(':')
      : [...TLS13_FIRST, ...defaults].join(':');
    try {
      this.#context = tls.createSecureContext({
        ...(opts.certs ? certDirSecureOptions(opts.certs) : {}),
        ciphers,
        honorCipherOrder: true,
        // OpenSSL wants one when it verifies peers and a TLS 1.3 PSK (a "resumption") is used.
        sessionIdContext: 'rebound-nbd',
        minVersion: 'TLSv1.2',
      });
    } catch (err) {
      throw new ReboundError('ERR_TLS_CREDENTIALS', `cannot set up TLS: ${errorText(err)}`, { cause: err });
    }
  }

  /** From the daemon settings; undefined when nbdTls is off. Loads and checks the credentials. */
  static async load(settings: NbdTlsSettings, log: Logger): Promise<NbdTls | undefined> {
    if (settings.nbdTls === 'off') {
      if (settings.tlsCertDir !== 'off' || settings.tlsPskFile !== 'off' || settings.tlsVerifyPeer) {
        log.warn('TLS credentials are configured but nbdTls is off: NBD stays plain text (set --tls on or --tls require)');
      }
      return undefined;
    }
    const certs = settings.tlsCertDir !== 'off' ? await loadCertDir(settings.tlsCertDir, { requireCa: settings.tlsVerifyPeer, logger: log }) : undefined;
    const psk = settings.tlsPskFile !== 'off' ? await loadPskFile(settings.tlsPskFile, { logger: log }) : undefined;
    const t = new NbdTls({ mode: settings.nbdTls, certs, psk, verifyPeer: settings.tlsVerifyPeer });
    log.info('NBD TLS enabled', {
      mode: t.mode,
      ...(certs ? { certificates: certs.dir, verifyPeer: t.verifyPeer } : {}),
      ...(psk ? { pskFile: psk.file, pskUsers: psk.keys.size } : {}),
      // Who seals and opens TLS 1.3 records after the handshake (record-stream.ts), when the addon is built.
      records: tlsRecordFunctions()?.tlsAeadEngine() ?? "Node's TLS socket (no native addon)",
    });
    return t;
  }

  /**
   * Runs the TLS handshake on a socket whose NBD_OPT_STARTTLS was just acknowledged. Resolves
   * with the TLS socket and the peer's identity; rejects with TlsRefused (logged here).
   */
  upgrade(raw: net.Socket, log: Logger, warn: (msg: string, fields: Record<string, unknown>) => void = (m, f) => log.warn(m, f)): Promise<TlsUpgrade> {
    return new Promise((resolve, reject) => {
      let pskUser: string | undefined;
      let pskUnknown: string | undefined;
      const keys = this.psk?.keys;
      // With the native addon, a tap counts the records under the application keys (for offload);
      // without it, Node's TLS socket carries the connection throughout.
      const fns = tlsRecordFunctions();
      const tap = fns ? new RecordTap(raw, fns) : undefined;
      const socket = new tls.TLSSocket(tap ?? raw, {
        isServer: true,
        secureContext: this.#context,
        requestCert: this.verifyPeer,
        rejectUnauthorized: false, // checked below, so the refusal is logged with its reason
        ...(keys
          ? {
              pskCallback: (_s: tls.TLSSocket, identity: string): Buffer | null => {
                const key = keys.get(identity);
                if (!key) {
                  pskUnknown = identity;
                  return null;
                }
                pskUser = identity;
                return key;
              },
            }
          : {}),
      });
      if (tap) {
        socket.on('keylog', (line) => tap.keylog(line));
        tap.suite = () => (socket.getProtocol() === 'TLSv1.3' ? tls13Suite(socket.getCipher()?.standardName) : undefined);
      }
      const offload = async (idle: () => boolean, buffers?: SealBuffers): Promise<TlsRecordStream | undefined> => {
        if (!tap || !fns) return undefined;
        tap.hold();
        // Every reply written so far has gone through the tap once this empty write completes.
        await new Promise<void>((resolve) => socket.write(Buffer.alloc(0), () => resolve()));
        const suite = tap.suite();
        const state = suite && idle() && socket.readableLength === 0 && !socket.destroyed ? tap.detach() : undefined;
        if (!suite || !state) {
          tap.release();
          return undefined;
        }
        socket.destroy(); // detached: this no longer touches the raw socket
        return new TlsRecordStream(
          raw,
          {
            tx: new TrafficKeys(fns, suite, state.secrets.server, { seal: true, seq: state.txSeq }),
            rx: new TrafficKeys(fns, suite, state.secrets.client, { seal: false, seq: state.rxSeq }),
            pending: state.pending,
          },
          buffers,
        );
      };
      let settled = false;
      const refuse = (reason: string, fields: Record<string, unknown> = {}): void => {
        if (settled) return;
        settled = true;
        warn('TLS client refused', { reason, ...fields });
        socket.destroy();
        raw.destroy();
        reject(new TlsRefused(reason));
      };
      socket.once('secure', () => {
        if (settled) return;
        if (pskUser !== undefined) {
          settled = true;
          resolve({ socket, identity: { kind: 'psk', name: pskUser }, offload });
          return;
        }
        if (this.verifyPeer) {
          const why = verifyError(socket);
          if (why !== undefined) {
            refuse(socket.getPeerX509Certificate() ? `client certificate not trusted: ${why}` : 'the client sent no certificate', certFields(socket));
            return;
          }
          settled = true;
          resolve({ socket, identity: certIdentity(socket), offload });
          return;
        }
        settled = true;
        resolve({ socket, identity: undefined, offload });
      });
      socket.once('error', (err) => {
        const why = pskUnknown !== undefined ? `unknown PSK username '${pskUnknown}'` : tlsErrorText(err, keys !== undefined);
        refuse(why, pskUnknown !== undefined ? { pskUser: pskUnknown } : {});
      });
      socket.once('close', () => refuse(pskUnknown !== undefined ? `unknown PSK username '${pskUnknown}'` : 'the client closed the connection during the TLS handshake'));
    });
  }
}

/**
 * Why OpenSSL did not accept the peer's certificate chain (against ca-cert.pem and ca-crl.pem), or
 * undefined when it did. A TLSSocket made for STARTTLS has no tls.Server, and only the server's
 * connection listener copies this into `authorized`; this asks the same native handle it asks.
 * Should that handle ever lack the method, every certificate is refused (fail closed).
 */
function verifyError(socket: tls.TLSSocket): string | undefined {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => unknown } })._handle;
  if (typeof handle?.verifyError !== 'function') return 'cannot check the certificate (no verifyError on the TLS handle)';
  const e = handle.verifyError();
  if (e === null || e === undefined || e === 0 || e === '') return undefined;
  if (typeof e === 'string') return e;
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' ? code : errorText(e);
}

/** The identity of a verified client certificate: its subject DN, most specific part first. */
function certIdentity(socket: tls.TLSSocket): TlsIdentity {
  const x = socket.getPeerX509Certificate();
  const parts = (x?.subject ?? '').split('\n').filter((p) => p !== '');
  const cn = parts.find((p) => p.startsWith('CN='))?.slice(3);
  return { kind: 'x509', name: parts.reverse().join(','), ...(cn !== undefined ? { cn } : {}) };
}

function certFields(socket: tls.TLSSocket): Record<string, unknown> {
  const x = socket.getPeerX509Certificate();
  if (!x) return {};
  return { subject: x.subject.split('\n').reverse().join(','), issuer: x.issuer.split('\n').reverse().join(',') };
}

function tlsErrorText(err: Error, psk: boolean): string {
  const m = err.message;
  if (/decrypt|bad record mac|psk/i.test(m) && psk) return `TLS handshake failed (wrong PSK key?): ${short(m)}`;
  if (/wrong version number|http request|unknown protocol/i.test(m)) return `not a TLS client: ${short(m)}`;
  return `TLS handshake failed: ${short(m)}`;
}

function short(m: string): string {
  const r = /:([^:]+):[^:]*\.c:\d+:/.exec(m);
  return r ? r[1]! : m.split('\n')[0]!;
}
