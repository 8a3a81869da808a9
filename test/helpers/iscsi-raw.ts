/**
 * A minimal iSCSI initiator speaking raw PDUs, for tests that need to say things real initiators
 * do not (fuzzing, protocol edge cases) and for liveness checks: login to a Normal session in one
 * round, SCSI commands with Data-In collection, arbitrary PDUs.
 */
import net from 'node:net';
import { ByteReader } from '../../src/nbd/byte-reader.js';
import { BHS_LENGTH, encodePdu, NO_DIGESTS, Op, readPdu, type Pdu } from '../../src/iscsi/pdu.js';
import { encodeText, parseText } from '../../src/iscsi/text.js';

export class RawIscsiClient {
  readonly socket: net.Socket;
  readonly #reader: ByteReader;
  cmdSN = 1;
  expStatSN = 0;
  #itt = 1;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#reader = new ByteReader(socket);
    socket.on('error', () => undefined);
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawIscsiClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port }, () => resolve(new RawIscsiClient(s)));
      s.once('error', reject);
    });
  }

  send(bhs: Buffer, data?: Buffer): void {
    for (const b of encodePdu(bhs, data, NO_DIGESTS)) this.socket.write(b);
  }

  async next(timeoutMs = 3000): Promise<Pdu> {
    let t: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        readPdu(this.#reader, { ...NO_DIGESTS, maxDataLength: 16 * 1024 * 1024 }),
        new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`no PDU within ${timeoutMs} ms`)), timeoutMs))),
      ]);
    } finally {
      clearTimeout(t);
    }
  }

  /** Logs in to a Normal session in one round (operational stage straight to full feature). */
  async login(target: string, initiator = 'iqn.2026-12.org.rebound.test:raw', isid = Buffer.from([0x80, 0, 0, 0, 0, 1])): Promise<Record<string, string>> {
    const b = Buffer.alloc(BHS_LENGTH);
    b[0] = Op.Login | 0x40;
    b[1] = 0x80 | (1 << 2) | 3;
    isid.copy(b, 8);
    b.writeUInt32BE(this.#itt++, 16);
    b.writeUInt32BE(this.cmdSN, 24);
    this.send(
      b,
      encodeText([
        ['InitiatorName', initiator],
        ['TargetName', target],
        ['SessionType', 'Normal'],
        ['HeaderDigest', 'None'],
        ['DataDigest', 'None'],
        ['MaxRecvDataSegmentLength', '262144'],
        ['ImmediateData', 'Yes'],
        ['InitialR2T', 'No'],
      ]),
    );
    const r = await this.next();
    if (r.opcode !== Op.LoginResponse) throw new Error(`login answered with opcode ${r.opcode}`);
    const status = r.raw.readUInt16BE(36);
    if (status !== 0) throw new Error(`login refused: status 0x${status.toString(16)}`);
    this.expStatSN = (r.raw.readUInt32BE(24) + 1) >>> 0;
    const t = parseText(r.data);
    return t.ok ? Object.fromEntries(t.pairs) : {};
  }

  /** PDUs that arrived for other tasks while `command` waited for its own. */
  readonly stray: Pdu[] = [];

  /** Sends a SCSI command; resolves with its status, Data-In and sense. */
  async command(cdb: Buffer, opts: { lun?: number; read?: number; dataOut?: Buffer } = {}): Promise<{ status: number; data: Buffer; sense: Buffer | undefined }> {
    const itt = this.sendCommand(cdb, opts);
    const chunks: Buffer[] = [];
    for (;;) {
      const p = await this.next();
      if (p.itt !== itt) {
        this.stray.push(p);
        continue;
      }
      if (p.opcode === Op.DataIn) {
        chunks.push(Buffer.from(p.data));
        if (p.flags & 0x01) return { status: p.raw[3]!, data: Buffer.concat(chunks), sense: undefined };
      } else if (p.opcode === Op.ScsiResponse) {
        const sense = p.data.length >= 2 ? p.data.subarray(2, 2 + p.data.readUInt16BE(0)) : undefined;
        return { status: p.raw[3]!, data: Buffer.concat(chunks), sense };
      } else {
        throw new Error(`unexpected PDU opcode 0x${p.opcode.toString(16)}`);
      }
    }
  }

  /** Sends a SCSI Command PDU (CmdSN = this.cmdSN, then advanced); returns its ITT. */
  sendCommand(cdb: Buffer, opts: { lun?: number; read?: number; dataOut?: Buffer } = {}): number {
    const b = Buffer.alloc(BHS_LENGTH);
    b[0] = Op.ScsiCommand;
    b[1] = 0x80 | (opts.read ? 0x40 : 0) | (opts.dataOut ? 0x20 : 0) | 1;
    b[9] = opts.lun ?? 0;
    const itt = this.#itt++;
    b.writeUInt32BE(itt, 16);
    b.writeUInt32BE(opts.read ?? opts.dataOut?.length ?? 0, 20);
    b.writeUInt32BE(this.cmdSN, 24);
    this.cmdSN = (this.cmdSN + 1) >>> 0;
    b.writeUInt32BE(this.expStatSN, 28);
    cdb.copy(b, 32, 0, Math.min(16, cdb.length));
    this.send(b, opts.dataOut);
    return itt;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A READ(10) CDB. */
export function read10(lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x28;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}

/** A PERSISTENT RESERVE OUT command: CDB (service action, type) and its 24-byte parameter list. */
export function prOut(sa: number, key: bigint, saKey = 0n, type = 0, flags = 0, length = 24): { cdb: Buffer; dataOut: Buffer } {
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x5f;
  cdb[1] = sa;
  cdb[2] = type;
  cdb.writeUInt32BE(length, 5);
  const p = Buffer.alloc(24);
  p.writeBigUInt64BE(key, 0);
  p.writeBigUInt64BE(saKey, 8);
  p[20] = flags;
  return { cdb, dataOut: p };
}
