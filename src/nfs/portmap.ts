/**
 * PORTMAP v2 (RFC 1833 §3, RFC 1057 appendix A) over TCP and UDP: NULL, GETPORT and DUMP answer
 * from a fixed table supplied by the NFS server (MOUNT v3 and NFS v3 on TCP, and the portmapper
 * itself). rpcbind v3/v4 are not offered: clients (rpcinfo, libtirpc) fall back to v2.
 * SET/UNSET answer FALSE (no other program may register here); CALLIT is not offered.
 * json-pack has no portmapper codec; the messages are four words, so they are encoded by hand.
 */
import { IPPROTO_TCP, PROG_PORTMAP } from './rpc/constants.js';
import { success, type RpcCall, type RpcProgram, type RpcResult } from './rpc/connection.js';

export interface PortMapping {
  prog: number;
  vers: number;
  prot: number;
  port: number;
}

const Proc = { NULL: 0, SET: 1, UNSET: 2, GETPORT: 3, DUMP: 4 } as const;

export class PortmapProgram implements RpcProgram {
  readonly prog = PROG_PORTMAP;
  readonly name = 'portmapper';
  readonly low = 2;
  readonly high = 2;
  readonly #mappings: () => PortMapping[];

  constructor(mappings: () => PortMapping[]) {
    this.#mappings = mappings;
  }

  call(call: RpcCall): RpcResult {
    switch (call.proc) {
      case Proc.NULL:
        return success();
      case Proc.SET:
      case Proc.UNSET:
        return success(word(0));
      case Proc.GETPORT: {
        const p = call.params;
        if (!p || p.size() < 16) return { kind: 'garbage-args' };
        const prog = p.u32();
        const vers = p.u32();
        const prot = p.u32();
        const m = this.#mappings().find((x) => x.prog === prog && x.vers === vers && x.prot === prot);
        return success(word(m?.port ?? 0));
      }
      case Proc.DUMP:
        return success(encodeDump(this.#mappings()));
      default:
        return { kind: 'proc-unavail' };
    }
  }
}

function word(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

export function encodeDump(list: PortMapping[]): Buffer {
  const b = Buffer.alloc(4 + list.length * 20);
  let x = 0;
  for (const m of list) {
    b.writeUInt32BE(1, x);
    b.writeUInt32BE(m.prog, x + 4);
    b.writeUInt32BE(m.vers, x + 8);
    b.writeUInt32BE(m.prot, x + 12);
    b.writeUInt32BE(m.port, x + 16);
    x += 20;
  }
  b.writeUInt32BE(0, x);
  return b;
}

export { IPPROTO_TCP };
