/**
 * Test credentials for NBD TLS, made with the real `openssl` command in a temp dir:
 *
 *   server/           ca-cert.pem, server-cert.pem (CN=localhost, SAN localhost + 127.0.0.1), server-key.pem
 *                     (what --tls-certificates takes)
 *   clients/NAME/     ca-cert.pem, client-cert.pem, client-key.pem (subject CN=NAME,O=Rebound Test): the
 *                     layout qemu's tls-creds-x509 (endpoint=client) and libnbd's tls-certificates= read
 *   clients/rogue/    a client certificate CN=alice signed by ANOTHER CA (must be refused)
 *   keys.psk          the server's PSK file (psktool format): one line per PSK user
 *   psk/NAME/keys.psk one user's line (qemu's tls-creds-psk dir=, libnbd's tls-psk-file=)
 *   psk/wrong/keys.psk alice with a wrong key
 *
 * EC P-256 keys: quick to make. Certificates are valid for a day.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { runOk } from './run.js';

export interface TlsFixture {
  root: string;
  serverDir: string;
  /** clients/NAME for each client asked for, and clients/rogue. */
  clientDir(name: string): string;
  pskFile: string;
  pskKeys: Record<string, string>;
  /** A one-user keys.psk directory for qemu (and its file for libnbd); 'wrong' is alice with a bad key. */
  pskDir(name: string): string;
}

const DAYS = '1';

async function openssl(args: string[], cwd: string): Promise<void> {
  await runOk('openssl', args, { cwd });
}

async function makeCa(dir: string, cn: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca-key.pem'], dir);
  await openssl(
    ['req', '-x509', '-new', '-key', 'ca-key.pem', '-sha256', '-days', DAYS, '-subj', `/O=Rebound Test/CN=${cn}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', 'ca-cert.pem'],
    dir,
  );
}

/** A key and certificate signed by caDir's CA; outDir's ca-cert.pem is trustDir's (the CA its owner trusts). */
async function makeLeaf(caDir: string, outDir: string, prefix: 'server' | 'client', cn: string, trustDir = caDir): Promise<void> {
  fs.mkdirSync(outDir, { recursive: true });
  const key = path.join(outDir, `${prefix}-key.pem`);
  const csr = path.join(outDir, `${prefix}.csr`);
  const ext = path.join(outDir, `${prefix}.ext`);
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], outDir);
  // PKCS#8, as certtool and most tools write keys.
  await openssl(['pkcs8', '-topk8', '-nocrypt', '-in', key, '-out', key + '.p8'], outDir);
  fs.renameSync(key + '.p8', key);
  fs.chmodSync(key, 0o600);
  await openssl(['req', '-new', '-key', key, '-subj', `/O=Rebound Test/CN=${cn}`, '-out', csr], outDir);
  fs.writeFileSync(
    ext,
    prefix === 'server'
      ? 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n'
      : 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
  );
  await openssl(
    ['x509', '-req', '-in', csr, '-CA', path.join(caDir, 'ca-cert.pem'), '-CAkey', path.join(caDir, 'ca-key.pem'), '-CAcreateserial',
      '-days', DAYS, '-sha256', '-extfile', ext, '-out', path.join(outDir, `${prefix}-cert.pem`)],
    outDir,
  );
  fs.copyFileSync(path.join(trustDir, 'ca-cert.pem'), path.join(outDir, 'ca-cert.pem'));
  fs.rmSync(csr);
  fs.rmSync(ext);
}

/** Makes the CA, the server's directory, one client directory per name, a rogue client and PSK files. */
export async function makeTlsFixture(root: string, clients: string[] = ['alice', 'bob']): Promise<TlsFixture> {
  const ca = path.join(root, 'ca');
  const otherCa = path.join(root, 'other-ca');
  await makeCa(ca, 'Rebound Test CA');
  await makeCa(otherCa, 'Somebody Else CA');
  const serverDir = path.join(root, 'server');
  await makeLeaf(ca, serverDir, 'server', 'localhost');
  for (const c of clients) await makeLeaf(ca, path.join(root, 'clients', c), 'client', c);
  await makeLeaf(otherCa, path.join(root, 'clients', 'rogue'), 'client', 'alice', ca);

  const pskKeys: Record<string, string> = {};
  for (const c of clients) pskKeys[c] = crypto.randomBytes(32).toString('hex');
  const pskFile = path.join(root, 'keys.psk');
  fs.writeFileSync(pskFile, Object.entries(pskKeys).map(([u, k]) => `${u}:${k}\n`).join(''), { mode: 0o600 });
  const pskDirOf = (name: string): string => path.join(root, 'psk', name);
  for (const c of clients) {
    fs.mkdirSync(pskDirOf(c), { recursive: true });
    fs.writeFileSync(path.join(pskDirOf(c), 'keys.psk'), `${c}:${pskKeys[c]}\n`, { mode: 0o600 });
  }
  fs.mkdirSync(pskDirOf('wrong'), { recursive: true });
  fs.writeFileSync(path.join(pskDirOf('wrong'), 'keys.psk'), `alice:${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o600 });

  return {
    root,
    serverDir,
    clientDir: (name) => path.join(root, 'clients', name),
    pskFile,
    pskKeys,
    pskDir: pskDirOf,
  };
}
