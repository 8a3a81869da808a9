/** Export options of the datastore: which client addresses may mount it, from which ports, and read-only. */
import { clientFilter } from '../util/client-filter.js';
import type { ExportPolicy } from './nfs3/program.js';

/**
 * `clients`: addresses (`10.0.0.5`, `fd00::1`) and subnets (`10.0.0.0/24`); empty or `*` allows all
 * (util/client-filter.ts). Throws ERR_INVALID_ARGUMENT naming a malformed entry.
 */
export function exportPolicy(clients: readonly string[], readOnly: boolean, requirePrivilegedPort = false): ExportPolicy {
  return { readOnly, allows: clientFilter(clients), requirePrivilegedPort };
}

/** Source ports below this are privileged: only root can bind them (knfsd's `secure`). */
export const PRIVILEGED_PORT_LIMIT = 1024;

/** Whether a call from `peer` passes the export's source-port rule. */
export function portAllowed(policy: ExportPolicy, peer: { port: number }): boolean {
  return !policy.requirePrivilegedPort || peer.port < PRIVILEGED_PORT_LIMIT;
}
