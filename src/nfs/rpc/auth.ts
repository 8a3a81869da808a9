/** AUTH_SYS (AUTH_UNIX) credentials, RFC 5531 appendix A. */

export interface AuthSys {
  stamp: number;
  machine: string;
  uid: number;
  gid: number;
  gids: number[];
}

/** Parses an AUTH_SYS credential body; undefined when it is malformed. */
export function parseAuthSys(body: Uint8Array): AuthSys | undefined {
  const b = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  try {
    let x = 0;
    const stamp = b.readUInt32BE(x);
    x += 4;
    const nameLen = b.readUInt32BE(x);
    x += 4;
    if (nameLen > 255 || x + nameLen > b.length) return undefined;
    const machine = b.toString('latin1', x, x + nameLen);
    x += (nameLen + 3) & ~3;
    const uid = b.readUInt32BE(x);
    const gid = b.readUInt32BE(x + 4);
    const n = b.readUInt32BE(x + 8);
    x += 12;
    if (n > 16 || x + 4 * n > b.length) return undefined;
    const gids: number[] = [];
    for (let i = 0; i < n; i++) gids.push(b.readUInt32BE(x + 4 * i));
    return { stamp, machine, uid, gid, gids };
  } catch {
    return undefined;
  }
}
