/**
 * The portmapper, program 100000, over TCP and UDP, answering from a fixed table supplied by the
 * NFS server (MOUNT v3 and NFS v3 on TCP, and the portmapper itself):
 *  - PORTMAP v2 (RFC 1833 §3, RFC 1057 appendix A): NULL, GETPORT, DUMP (`rpcinfo -p`, libnfs,
 *    QEMU, ESXi).
 *  - rpcbind v3 and v4 (RFC 1833 §2): NULL, GETADDR, DUMP (`rpcinfo -s`, which XenServer's storage
 *    manager runs before it mounts an NFS SR), GETTIME, and v4's GETVERSADDR and GETADDRLIST
 *    (nfs-utils' mount.nfs asks these before falling back to v2). Universal addresses are built
 *    from the address the call arrived at (`h1.h2.h3.h4.p1.p2`); the owner is "superuser", as
 *    rpcbind shows for services root registered.
 * SET/UNSET answer FALSE (no other program may register here); CALLIT/BCAST, INDIRECT, GETSTAT,
 * UADDR2TADDR and TADDR2UADDR are not offered (PROC_UNAVAIL). Hand-encoded: json-pack has no
 * portmapper codec, and the messages are a few words and strings.
 */
import net from 'node:net';
import { IPPROTO_TCP, IPPROTO_UDP, PROG_PORTMAP } from './rpc/constants.js';
import { success, type RpcCall, type RpcProgram, type RpcResult, type XdrReader } from './rpc/connection.js';

export interface PortMapping {
  prog: number;
  vers: number;
  prot: number;
  port: number;
}

const Proc = { NULL: 0, SET: 1, UNSET: 2, GETPORT: 3, DUMP: 4 } as const;
const RpcbProc = { NULL: 0, SET: 1, UNSET: 2, GETADDR: 3, DUMP: 4, GETTIME: 6, GETVERSADDR: 9, GETADDRLIST: 11 } as const;
/** Longest netid, address or owner string accepted in an rpcb argument. */
const MAX_RPCB_STRING = 256;
const OWNER = 'superuser';
/** netconfig semantics (rpcb_entry r_nc_semantics): NC_TPI_CLTS, NC_TPI_COTS_ORD. */
const NC_TPI_CLTS = 1;
const NC_TPI_COTS_ORD = 3;

export class PortmapProgram implements RpcProgram {
  readonly prog = PROG_PORTMAP;
  readonly name = 'portmapper';
  readonly low = 2;
  readonly high = 4;
  readonly #mappings: () => PortMapping[];

  constructor(mappings: () => PortMapping[]) {
    this.#mappings = mappings;
  }

  call(call: RpcCall): RpcResult {
    return call.vers === 2 ? this.#v2(call) : this.#rpcbind(call);
  }

  #v2(call: RpcCall): RpcResult {
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

  #rpcbind(call: RpcCall): RpcResult {
    const host = call.local && net.isIP(call.local) ? call.local : '0.0.0.0';
    switch (call.proc) {
      case RpcbProc.NULL:
        return success();
      case RpcbProc.SET:
      case RpcbProc.UNSET:
        return call.params && readRpcb(call.params) ? success(word(0)) : { kind: 'garbage-args' };
      case RpcbProc.GETADDR:
      case RpcbProc.GETVERSADDR: {
        const a = call.params && readRpcb(call.params);
        if (!a) return { kind: 'garbage-args' };
        const list = this.#mappings().filter((m) => m.prog === a.prog && (a.netid === '' || netid(m.prot, host) === a.netid));
        // GETADDR may answer with another version of the program (rpcbind's RPCB_ALLVERS); GETVERSADDR may not.
        const m = list.find((x) => x.vers === a.vers) ?? (call.proc === RpcbProc.GETADDR ? list[0] : undefined);
        return success(xdrString(m ? universalAddress(host, m.port) : ''));
      }
      case RpcbProc.DUMP:
        return success(encodeRpcbList(this.#mappings(), host));
      case RpcbProc.GETTIME:
        return success(word(Math.floor(Date.now() / 1000)));
      case RpcbProc.GETADDRLIST: {
        if (call.vers !== 4) return { kind: 'proc-unavail' };
        const a = call.params && readRpcb(call.params);
        if (!a) return { kind: 'garbage-args' };
        const list = this.#mappings().filter((m) => m.prog === a.prog && m.vers === a.vers);
        return success(encodeEntryList(list, host));
      }
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

/** The netid of a transport for clients reaching `host` ("tcp", "udp", "tcp6", "udp6"). */
function netid(prot: number, host: string): string {
  return (prot === IPPROTO_UDP ? 'udp' : 'tcp') + (net.isIPv6(host) ? '6' : '');
}

/** RFC 1833 universal address: the host's text form, then the port's two bytes in decimal. */
export function universalAddress(host: string, port: number): string {
  return `${host}.${port >> 8}.${port & 0xff}`;
}

/** rpcblist (RPCBPROC_DUMP): an XDR optional-data list of rpcb {prog, vers, netid, addr, owner}. */
export function encodeRpcbList(list: PortMapping[], host: string): Buffer {
  const parts: Buffer[] = [];
  for (const m of list) {
    parts.push(word(1), word(m.prog), word(m.vers), xdrString(netid(m.prot, host)), xdrString(universalAddress(host, m.port)), xdrString(OWNER));
  }
  parts.push(word(0));
  return Buffer.concat(parts);
}

/** rpcb_entry_list (RPCBPROC_GETADDRLIST): {maddr, netid, semantics, protofmly, proto} per entry. */
function encodeEntryList(list: PortMapping[], host: string): Buffer {
  const parts: Buffer[] = [];
  for (const m of list) {
    const udp = m.prot === IPPROTO_UDP;
    parts.push(word(1), xdrString(universalAddress(host, m.port)), xdrString(netid(m.prot, host)), word(udp ? NC_TPI_CLTS : NC_TPI_COTS_ORD));
    parts.push(xdrString(net.isIPv6(host) ? 'inet6' : 'inet'), xdrString(udp ? 'udp' : 'tcp'));
  }
  parts.push(word(0));
  return Buffer.concat(parts);
}

export function xdrString(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  const b = Buffer.alloc(4 + bytes.length + ((4 - (bytes.length % 4)) % 4));
  b.writeUInt32BE(bytes.length, 0);
  bytes.copy(b, 4);
  return b;
}

/** An rpcb argument {prog, vers, netid, addr, owner}, or undefined when it does not decode. */
function readRpcb(p: XdrReader): { prog: number; vers: number; netid: string } | undefined {
  try {
    if (p.size() < 8) return undefined;
    const prog = p.u32();
    const vers = p.u32();
    const id = readString(p);
    if (id === undefined || readString(p) === undefined || readString(p) === undefined) return undefined;
    return { prog, vers, netid: id };
  } catch {
    return undefined;
  }
}

function readString(p: XdrReader): string | undefined {
  if (p.size() < 4) return undefined;
  const n = p.u32();
  const padded = n + ((4 - (n % 4)) % 4);
  if (n > MAX_RPCB_STRING || p.size() < padded) return undefined;
  const s = p.utf8(n);
  p.skip(padded - n);
  return s;
}

export { IPPROTO_TCP };
