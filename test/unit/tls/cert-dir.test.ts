/** loadCertDir: the qemu/nbdkit certificate directory, checked at load with errors that name the file. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReboundError } from '../../../src/errors.js';
import { loadCertDir } from '../../../src/tls/cert-dir.js';
import { createLogger } from '../../../src/util/log.js';
import { tempDir } from '../../helpers/images.js';
import { missingPeers } from '../../helpers/peers.js';
import { makeTlsFixture, type TlsFixture } from '../../helpers/tls-certs.js';

const missing = missingPeers('openssl');

describe.skipIf(missing.length > 0)('loadCertDir', () => {
  let root: string;
  let fx: TlsFixture;
  beforeAll(async () => {
    root = tempDir('rebound-certdir-');
    fx = await makeTlsFixture(path.join(root, 'fx'), ['alice']);
  }, 60_000);
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

  /** A copy of the server directory to break. */
  const copy = (name: string): string => {
    const d = path.join(root, name);
    fs.cpSync(fx.serverDir, d, { recursive: true });
    return d;
  };
  const code = async (p: Promise<unknown>): Promise<ReboundError> => {
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ReboundError);
    expect((err as ReboundError).code).toBe('ERR_TLS_CREDENTIALS');
    return err as ReboundError;
  };

  it('loads a good directory: CA, certificate, key; no warnings', async () => {
    const c = await loadCertDir(fx.serverDir, { requireCa: true });
    expect(c.dir).toBe(path.resolve(fx.serverDir));
    expect(c.cert.toString()).toContain('BEGIN CERTIFICATE');
    expect(c.key.toString()).toContain('PRIVATE KEY');
    expect(c.ca?.toString()).toContain('BEGIN CERTIFICATE');
    expect(c.crl).toBeUndefined();
    expect(c.warnings).toEqual([]);
  });

  it('names a missing directory, a missing file, and a missing CA only when required', async () => {
    expect((await code(loadCertDir(path.join(root, 'nope')))).message).toMatch(/nope cannot be used: it does not exist/);
    const d = copy('no-key');
    fs.rmSync(path.join(d, 'server-key.pem'));
    expect((await code(loadCertDir(d))).message).toMatch(/has no server-key\.pem/);
    const noCa = copy('no-ca');
    fs.rmSync(path.join(noCa, 'ca-cert.pem'));
    expect((await loadCertDir(noCa)).ca).toBeUndefined();
    expect((await code(loadCertDir(noCa, { requireCa: true }))).message).toMatch(/has no ca-cert\.pem/);
  });

  it('refuses a key that is not the certificate\'s', async () => {
    const d = copy('mismatch');
    fs.copyFileSync(path.join(fx.clientDir('alice'), 'client-key.pem'), path.join(d, 'server-key.pem'));
    expect((await code(loadCertDir(d))).message).toMatch(/server-key\.pem does not match .*server-cert\.pem/);
  });

  it('refuses files that are not PEM or do not parse', async () => {
    const d = copy('garbage');
    fs.writeFileSync(path.join(d, 'server-cert.pem'), 'hello\n');
    expect((await code(loadCertDir(d))).message).toMatch(/server-cert\.pem is not PEM/);
    const e = copy('broken-pem');
    fs.writeFileSync(path.join(e, 'ca-cert.pem'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expect((await code(loadCertDir(e))).message).toMatch(/ca-cert\.pem is not a valid PEM certificate/);
    const f = copy('dir-as-file');
    fs.rmSync(path.join(f, 'server-cert.pem'));
    fs.mkdirSync(path.join(f, 'server-cert.pem'));
    expect((await code(loadCertDir(f))).message).toMatch(/server-cert\.pem cannot be read: it is a directory/);
  });

  it('warns (and logs) about a key readable by others, a certificate of another CA, an expired certificate', async () => {
    const d = copy('weak');
    fs.chmodSync(path.join(d, 'server-key.pem'), 0o644);
    fs.copyFileSync(path.join(fx.root, 'other-ca', 'ca-cert.pem'), path.join(d, 'ca-cert.pem'));
    const lines: string[] = [];
    const c = await loadCertDir(d, { logger: createLogger({ write: (l) => lines.push(l) }), now: new Date(Date.now() + 3 * 86_400_000) });
    expect(c.warnings).toHaveLength(3);
    expect(c.warnings[0]).toMatch(/server-key\.pem is readable by group or others \(mode 0644\)/);
    expect(c.warnings.join('\n')).toMatch(/expired on/);
    expect(c.warnings.join('\n')).toMatch(/is not issued by .*ca-cert\.pem/);
    expect(lines.filter((l) => l.includes('WARN'))).toHaveLength(3);
  });

  it('accepts an empty CRL from its CA', async () => {
    const d = copy('crl');
    const cadir = path.join(fx.root, 'ca');
    fs.writeFileSync(path.join(cadir, 'index.txt'), '');
    fs.writeFileSync(path.join(cadir, 'crlnumber'), '01\n');
    fs.writeFileSync(
      path.join(cadir, 'ca.cnf'),
      `[ca]\ndefault_ca=d\n[d]\ndatabase=${cadir}/index.txt\ncrlnumber=${cadir}/crlnumber\ndefault_md=sha256\ndefault_crl_days=1\n`,
    );
    const { runOk } = await import('../../helpers/run.js');
    await runOk('openssl', ['ca', '-config', path.join(cadir, 'ca.cnf'), '-gencrl', '-keyfile', path.join(cadir, 'ca-key.pem'), '-cert', path.join(cadir, 'ca-cert.pem'), '-out', path.join(d, 'ca-crl.pem')]);
    const c = await loadCertDir(d);
    expect(c.crl?.toString()).toContain('BEGIN X509 CRL');
    fs.writeFileSync(path.join(d, 'ca-crl.pem'), '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n');
    expect((await code(loadCertDir(d))).message).toMatch(/ca-crl\.pem is not a valid PEM CRL/);
  });
});
