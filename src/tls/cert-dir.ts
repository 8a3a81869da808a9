/**
 * Loads x509 credentials from a directory laid out as qemu and nbdkit expect
 * (`--tls-certificates DIR`, qemu's `tls-creds-x509,dir=DIR`):
 *
 *   ca-cert.pem      the CA that signed the peers' certificates (needed to verify clients)
 *   server-cert.pem  this server's certificate (chain allowed)
 *   server-key.pem   its private key
 *   ca-crl.pem       optional certificate revocation list
 *
 * Shared by the NBD server and the HTTP API. Everything is checked here, at start-up, so a bad file
 * is one clear ReboundError (ERR_TLS_CREDENTIALS) naming the file rather than a failed handshake
 * later: missing or unreadable files, PEM that does not parse, a key that does not match the
 * certificate. Weak spots that still work (a key readable by group or others, a server certificate
 * not issued by ca-cert.pem, an expired certificate) are warnings: returned, and logged when a
 * logger is given.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { ReboundError, errorText } from '../errors.js';
import type { Logger } from '../util/log.js';

export const CA_CERT_FILE = 'ca-cert.pem';
export const SERVER_CERT_FILE = 'server-cert.pem';
export const SERVER_KEY_FILE = 'server-key.pem';
export const CA_CRL_FILE = 'ca-crl.pem';

export interface CertDir {
  /** The directory, resolved to an absolute path. */
  dir: string;
  /** ca-cert.pem, when present. */
  ca?: Buffer;
  cert: Buffer;
  key: Buffer;
  /** ca-crl.pem, when present. */
  crl?: Buffer;
  /** Things that work but should be fixed (key permissions, issuer, expiry). */
  warnings: string[];
}

export interface LoadCertDirOptions {
  /** Fail when ca-cert.pem is missing (verifying client certificates needs it). Default false. */
  requireCa?: boolean;
  /** Warnings are logged here too. */
  logger?: Logger;
  /** For tests: the current time for the expiry check. */
  now?: Date;
}

/** Reads and checks a certificate directory. Throws ReboundError ERR_TLS_CREDENTIALS. */
export async function loadCertDir(dir: string, options: LoadCertDirOptions = {}): Promise<CertDir> {
  const abs = path.resolve(dir);
  let st;
  try {
    st = await fs.stat(abs);
  } catch (err) {
    throw credError(`TLS certificate directory ${abs} cannot be used: ${codeText(err)}`, err);
  }
  if (!st.isDirectory()) throw credError(`TLS certificate directory ${abs} is not a directory`);

  const warnings: string[] = [];
  const cert = await readPem(abs, SERVER_CERT_FILE, 'CERTIFICATE', true);
  const key = await readPem(abs, SERVER_KEY_FILE, 'PRIVATE KEY', true);
  const ca = await readPem(abs, CA_CERT_FILE, 'CERTIFICATE', options.requireCa ?? false);
  const crl = await readPem(abs, CA_CRL_FILE, 'X509 CRL', false);

  const keyPath = path.join(abs, SERVER_KEY_FILE);
  const keyStat = await fs.stat(keyPath);
  if ((keyStat.mode & 0o044) !== 0) {
    warnings.push(
      `${keyPath} is readable by group or others (mode ${(keyStat.mode & 0o777).toString(8).padStart(4, '0')}); ` +
        `chmod 600 it so only its owner can read the private key`,
    );
  }

  // Parse each piece on its own first, so the error names the file at fault.
  let serverX509: X509Certificate;
  try {
    serverX509 = new X509Certificate(cert);
  } catch (err) {
    throw credError(`${path.join(abs, SERVER_CERT_FILE)} is not a valid PEM certificate: ${errorText(err)}`, err);
  }
  try {
    tls.createSecureContext({ key });
  } catch (err) {
    throw credError(`${keyPath} is not a valid PEM private key (or it is encrypted): ${errorText(err)}`, err);
  }
  try {
    tls.createSecureContext({ cert, key });
  } catch (err) {
    throw credError(
      `${keyPath} does not match ${path.join(abs, SERVER_CERT_FILE)} (${errorText(err)}): the key must be the certificate's private key`,
      err,
    );
  }
  let caX509: X509Certificate | undefined;
  if (ca) {
    try {
      caX509 = new X509Certificate(ca);
      tls.createSecureContext({ ca });
    } catch (err) {
      throw credError(`${path.join(abs, CA_CERT_FILE)} is not a valid PEM certificate: ${errorText(err)}`, err);
    }
  }
  if (crl) {
    try {
      tls.createSecureContext({ ca, crl });
    } catch (err) {
      throw credError(`${path.join(abs, CA_CRL_FILE)} is not a valid PEM CRL: ${errorText(err)}`, err);
    }
  }

  const now = options.now ?? new Date();
  if (new Date(serverX509.validTo).getTime() < now.getTime()) {
    warnings.push(`${path.join(abs, SERVER_CERT_FILE)} expired on ${serverX509.validTo}; clients will refuse it`);
  } else if (new Date(serverX509.validFrom).getTime() > now.getTime()) {
    warnings.push(`${path.join(abs, SERVER_CERT_FILE)} is not valid before ${serverX509.validFrom}; clients will refuse it`);
  }
  if (caX509 && !issuedBy(serverX509, caX509)) {
    warnings.push(
      `${path.join(abs, SERVER_CERT_FILE)} is not issued by ${path.join(abs, CA_CERT_FILE)}; ` +
        `clients that trust that CA will refuse this server`,
    );
  }

  for (const w of warnings) options.logger?.warn(`TLS: ${w}`, { dir: abs });
  return { dir: abs, ...(ca ? { ca } : {}), cert, key, ...(crl ? { crl } : {}), warnings };
}

/** Options for tls.createServer/TLSSocket from a loaded directory. */
export function certDirSecureOptions(certs: CertDir): tls.SecureContextOptions {
  return { cert: certs.cert, key: certs.key, ...(certs.ca ? { ca: certs.ca } : {}), ...(certs.crl ? { crl: certs.crl } : {}) };
}

function issuedBy(cert: X509Certificate, ca: X509Certificate): boolean {
  try {
    return cert.checkIssued(ca) && cert.verify(ca.publicKey);
  } catch {
    return false;
  }
}

async function readPem(dir: string, name: string, label: string, required: true): Promise<Buffer>;
async function readPem(dir: string, name: string, label: string, required: boolean): Promise<Buffer | undefined>;
async function readPem(dir: string, name: string, label: string, required: boolean): Promise<Buffer | undefined> {
  const file = path.join(dir, name);
  let data: Buffer;
  try {
    data = await fs.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return undefined;
    if (code === 'ENOENT') throw credError(`TLS certificate directory ${dir} has no ${name}`, err);
    throw credError(`${file} cannot be read: ${codeText(err)}`, err);
  }
  if (!data.toString('latin1').includes(`-----BEGIN `) || !data.toString('latin1').includes(label)) {
    throw credError(`${file} is not PEM (expected a "-----BEGIN ...${label}-----" block)`);
  }
  return data;
}

function codeText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return 'it does not exist';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory';
  return errorText(err);
}

function credError(message: string, cause?: unknown): ReboundError {
  return new ReboundError('ERR_TLS_CREDENTIALS', message, cause === undefined ? undefined : { cause });
}
