/** Export options of the datastore: which client addresses may mount it, and read-only. */
import { clientFilter } from '../util/client-filter.js';
import type { ExportPolicy } from './nfs3/program.js';

/**
 * `clients`: addresses (`10.0.0.5`, `fd00::1`) and subnets (`10.0.0.0/24`); empty or `*` allows all
 * (util/client-filter.ts). Throws ERR_INVALID_ARGUMENT naming a malformed entry.
 */
export function exportPolicy(clients: readonly string[], readOnly: boolean): ExportPolicy {
  return { readOnly, allows: clientFilter(clients) };
}
