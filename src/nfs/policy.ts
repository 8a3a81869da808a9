/** Export options of the datastore: which client addresses may mount it, and read-only. */
import net from 'node:net';
import { ReboundError } from '../errors.js';
import type { ExportPolicy } from './nfs3/program.js';

/**
 * `clients`: addresses (`10.0.0.5`, `fd00::1`) and subnets (`10.0.0.0/24`); empty or `*` allows all.
 * Throws ERR_INVALID_ARGUMENT naming a malformed entry.
 */
export function exportPolicy(clients: readonly string[], readOnly: boolean): ExportPolicy {
  if (clients.length === 0 || clients.includes('*')) return { readOnly, allows: () => true };
  const list = new net.BlockList();
  for (const c of clients) {
    const [addr, bits] = c.split('/') as [string, string | undefined];
    const family = net.isIPv4(addr) ? 'ipv4' : net.isIPv6(addr) ? 'ipv6' : undefined;
    const prefix = bits === undefined ? undefined : Number(bits);
    if (!family || (bits !== undefined && (!/^\d+$/.test(bits) || prefix! > (family === 'ipv4' ? 32 : 128)))) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `invalid NFS client '${c}': expected an IP address, a subnet ADDR/BITS or '*'`);
    }
    if (prefix === undefined) list.addAddress(addr, family);
    else list.addSubnet(addr, prefix, family);
  }
  return {
    readOnly,
    allows: (address: string) => {
      const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : undefined;
      return family !== undefined && list.check(address, family);
    },
  };
}
