/**
 * Client address filters: the one parser of "which clients may connect" entries (an IP address
 * `10.0.0.5` / `fd00::1`, a subnet `10.0.0.0/24`, or `*` for everyone). The config validates its
 * `nfsClients` with it; the NFS export policy builds its address list from it.
 */
import net from 'node:net';
import { ReboundError } from '../errors.js';

export type ClientRule = { kind: 'all' } | { kind: 'address'; address: string; family: 'ipv4' | 'ipv6' } | { kind: 'subnet'; address: string; prefix: number; family: 'ipv4' | 'ipv6' };

/** Parses one entry; ERR_INVALID_ARGUMENT naming it when malformed. */
export function parseClientRule(text: string): ClientRule {
  if (text === '*') return { kind: 'all' };
  const [address, bits, extra] = text.split('/') as [string, string | undefined, string | undefined];
  const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : undefined;
  const prefix = bits === undefined ? undefined : Number(bits);
  if (!family || extra !== undefined || (bits !== undefined && (!/^\d+$/.test(bits) || prefix! > (family === 'ipv4' ? 32 : 128)))) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `invalid NFS client '${text}': expected an IP address, a subnet ADDR/BITS or '*'`);
  }
  return prefix === undefined ? { kind: 'address', address, family } : { kind: 'subnet', address, prefix, family };
}

/** A predicate over client addresses; no entries (or `*`) allows everyone. */
export function clientFilter(entries: readonly string[]): (address: string) => boolean {
  const rules = entries.map(parseClientRule);
  if (rules.length === 0 || rules.some((r) => r.kind === 'all')) return () => true;
  const list = new net.BlockList();
  for (const r of rules) {
    if (r.kind === 'address') list.addAddress(r.address, r.family);
    else if (r.kind === 'subnet') list.addSubnet(r.address, r.prefix, r.family);
  }
  return (address) => {
    const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : undefined;
    return family !== undefined && list.check(address, family);
  };
}
