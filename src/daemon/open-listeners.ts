/**
 * The start-up warnings about listeners reachable from the network without protection: a
 * listener not bound to loopback whose clients are neither authenticated nor encrypted. NBD is
 * protected only with TLS required (`--tls require`: identities, access rules); NFS has neither
 * (AUTH_SYS believes the client; --nfs-client narrows who may connect, by address). The HTTP API
 * always wants a token, but without TLS the tokens cross the network in clear text.
 */
import { parseTcpAddress } from '../util/address.js';

export interface ListenerFacts {
  nbd: string[];
  nbdTls: string;
  nfs: string[];
  nfsClients: readonly unknown[];
  http: string | undefined;
  httpTls: boolean;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\.\d+\.\d+\.\d+$/.test(h);
}

function hostOf(address: string): string {
  try {
    return parseTcpAddress(address).host;
  } catch {
    return address;
  }
}

/** One warning per exposed listener (empty when everything is on loopback or protected). */
export function openListenerWarnings(f: ListenerFacts): string[] {
  const out: string[] = [];
  for (const a of f.nbd) {
    if (isLoopbackHost(hostOf(a)) || f.nbdTls === 'require') continue;
    out.push(
      `NBD listener ${a} is reachable from the network with neither TLS nor authentication${f.nbdTls === 'on' ? ' required (--tls on lets plain clients in)' : ''}: ` +
        'whoever connects reads every restore point and writes every session. Use --tls require with --tls-certificates or --tls-psk (and --nbd-access), or listen on 127.0.0.1 / a Unix socket.',
    );
  }
  for (const a of f.nfs) {
    if (isLoopbackHost(hostOf(a))) continue;
    out.push(
      `NFS listener ${a} is reachable from the network with neither TLS nor authentication (AUTH_SYS trusts what the client claims)` +
        (f.nfsClients.length ? '; only the --nfs-client addresses may mount' : ' and any address may mount: list the hypervisors with --nfs-client') +
        '. Keep it on a storage network only the hypervisors reach.',
    );
  }
  if (f.http && !f.httpTls && !isLoopbackHost(hostOf(f.http))) {
    out.push(`HTTP API ${f.http} is reachable from the network without TLS: API tokens and requests cross it in clear text. Use --http-tls with --tls-certificates.`);
  }
  return out;
}
