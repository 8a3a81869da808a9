import { describe, expect, it } from 'vitest';
import { chapResponse, LoginNegotiator, Stage, type ChapCredentials, type LoginContext } from '../../../src/iscsi/login.js';
import { BHS_LENGTH, Op, parseBhs, type Pdu } from '../../../src/iscsi/pdu.js';
import { encodeText, parseBinary, parseText } from '../../../src/iscsi/text.js';

const TARGET = 'iqn.2026-12.org.rebound:session.s1';

function ctx(chap?: ChapCredentials): LoginContext {
  return {
    portalGroupTag: 1,
    limits: { maxRecvDataSegmentLength: 262144, maxBurstLength: 1048576, firstBurstLength: 262144 },
    chap,
    targetExists: (n) => n === TARGET,
    tsihStatus: () => [0x02, 0x0a],
  };
}

function login(opts: { transit?: boolean; cont?: boolean; csg: number; nsg?: number; text?: Array<[string, string]> | Buffer; tsih?: number; vmin?: number }): Pdu {
  const raw = Buffer.alloc(BHS_LENGTH);
  raw[0] = Op.Login | 0x40;
  raw[1] = (opts.transit ? 0x80 : 0) | (opts.cont ? 0x40 : 0) | (opts.csg << 2) | (opts.nsg ?? 0);
  raw[3] = opts.vmin ?? 0;
  raw.set([0x80, 0, 0, 0x12, 0x34, 0x56], 8);
  raw.writeUInt16BE(opts.tsih ?? 0, 14);
  raw.writeUInt32BE(0x1000, 16);
  raw.writeUInt32BE(77, 24);
  const data = Buffer.isBuffer(opts.text) ? opts.text : encodeText(opts.text ?? []);
  raw.writeUIntBE(data.length, 5, 3);
  return { ...parseBhs(raw), ahs: Buffer.alloc(0), data };
}

const keys = (d: Buffer): Record<string, string> => {
  const r = parseText(d);
  if (!r.ok) throw new Error(r.reason);
  return Object.fromEntries(r.pairs);
};
const status = (b: Buffer): number => b.readUInt16BE(36);

describe('iSCSI login negotiation', () => {
  it('goes security -> operational -> full feature, answering every key and TargetPortalGroupTag first', () => {
    const n = new LoginNegotiator(ctx());
    n.tsih = 9;
    const r1 = n.handle(login({ transit: true, csg: Stage.Security, nsg: Stage.Operational, text: [['InitiatorName', 'iqn.x:i'], ['SessionType', 'Normal'], ['TargetName', TARGET], ['AuthMethod', 'None']] }));
    expect(r1.failed).toBeUndefined();
    expect(r1.response.bhs[1]).toBe(0x80 | (0 << 2) | 1); // transit to operational
    const k1 = parseText(r1.response.data);
    expect(k1.ok && k1.pairs[0]).toEqual(['TargetPortalGroupTag', '1']);
    expect(keys(r1.response.data).AuthMethod).toBe('None');
    const r2 = n.handle(
      login({
        transit: true,
        csg: Stage.Operational,
        nsg: Stage.FullFeature,
        text: [
          ['HeaderDigest', 'CRC32C,None'],
          ['DataDigest', 'CRC32C'],
          ['MaxConnections', '4'],
          ['ErrorRecoveryLevel', '2'],
          ['InitialR2T', 'No'],
          ['ImmediateData', 'Yes'],
          ['MaxBurstLength', '16776192'],
          ['FirstBurstLength', '1048576'],
          ['MaxRecvDataSegmentLength', '65536'],
          ['X-com.example.Unknown', 'foo'],
        ],
      }),
    );
    const k2 = keys(r2.response.data);
    expect(k2).toMatchObject({
      HeaderDigest: 'None',
      DataDigest: 'CRC32C',
      MaxConnections: '1',
      ErrorRecoveryLevel: '0',
      InitialR2T: 'No',
      ImmediateData: 'Yes',
      MaxBurstLength: '1048576',
      FirstBurstLength: '262144',
      MaxRecvDataSegmentLength: '262144',
      'X-com.example.Unknown': 'NotUnderstood',
    });
    expect(k2.TargetPortalGroupTag).toBeUndefined();
    expect(r2.done).toBeDefined();
    expect(r2.done!.params).toMatchObject({ headerDigest: false, dataDigest: true, maxSendDataSegmentLength: 65536, initialR2T: false, firstBurstLength: 262144 });
    expect(r2.response.bhs.readUInt16BE(14)).toBe(9); // TSIH in the final response only
    expect(r1.response.bhs.readUInt16BE(14)).toBe(0);
  });

  it('gathers text sent with the Continue bit before answering', () => {
    const n = new LoginNegotiator(ctx());
    const text = encodeText([['InitiatorName', 'iqn.x:i'], ['TargetName', TARGET], ['AuthMethod', 'None']]);
    const a = n.handle(login({ cont: true, csg: 0, text: text.subarray(0, 10) }));
    expect(a.response.data.length).toBe(0);
    expect(a.failed).toBeUndefined();
    const b = n.handle(login({ transit: true, csg: 0, nsg: 1, text: text.subarray(10) }));
    expect(keys(b.response.data).AuthMethod).toBe('None');
    expect(b.response.bhs[1]! & 0x80).toBe(0x80);
  });

  it('refuses unknown targets, missing names, bad versions and a non-zero TSIH', () => {
    expect(status(new LoginNegotiator(ctx()).handle(login({ transit: true, csg: 0, nsg: 1, text: [['InitiatorName', 'i'], ['TargetName', 'iqn.nope:x']] })).response.bhs)).toBe(0x0203);
    expect(status(new LoginNegotiator(ctx()).handle(login({ transit: true, csg: 1, nsg: 3, text: [['InitiatorName', 'i'], ['SessionType', 'Normal']] })).response.bhs)).toBe(0x0207);
    expect(status(new LoginNegotiator(ctx()).handle(login({ csg: 0, vmin: 2, text: [] })).response.bhs)).toBe(0x0205);
    expect(status(new LoginNegotiator(ctx()).handle(login({ csg: 0, tsih: 5, text: [] })).response.bhs)).toBe(0x020a);
    expect(new LoginNegotiator(ctx()).handle(login({ csg: 0, text: Buffer.from('garbage') })).failed).toBeDefined();
  });

  it('runs one-way and mutual CHAP, and refuses a wrong secret', () => {
    const chap = { user: 'alice', secret: 'wonderland12', targetUser: 'tgt', targetSecret: 'lookingglass1' };
    const run = (secret: string, mutual: boolean) => {
      const n = new LoginNegotiator(ctx(chap));
      const r1 = n.handle(login({ csg: 0, nsg: 1, transit: true, text: [['InitiatorName', 'i'], ['TargetName', TARGET], ['AuthMethod', 'CHAP,None']] }));
      expect(keys(r1.response.data).AuthMethod).toBe('CHAP');
      expect(r1.response.bhs[1]! & 0x80).toBe(0); // no transit before CHAP is done
      const r2 = n.handle(login({ csg: 0, text: [['CHAP_A', '5']] }));
      const k = keys(r2.response.data);
      const challenge = parseBinary(k.CHAP_C!)!;
      const resp = chapResponse(Number(k.CHAP_I), secret, challenge);
      const mine = Buffer.from('0123456789abcdef');
      const extra: Array<[string, string]> = mutual ? [['CHAP_I', '7'], ['CHAP_C', '0x' + mine.toString('hex')]] : [];
      const r3 = n.handle(login({ csg: 0, nsg: 1, transit: true, text: [['CHAP_N', 'alice'], ['CHAP_R', '0x' + resp.toString('hex')], ...extra] }));
      return { r3, mine };
    };
    const ok = run('wonderland12', false).r3;
    expect(ok.failed).toBeUndefined();
    expect(ok.response.bhs[1]! & 0x80).toBe(0x80);
    const { r3: mutual, mine } = run('wonderland12', true);
    const k = keys(mutual.response.data);
    expect(k.CHAP_N).toBe('tgt');
    expect(parseBinary(k.CHAP_R!)).toEqual(chapResponse(7, 'lookingglass1', mine));
    const bad = run('wrong-secret', false).r3;
    expect(status(bad.response.bhs)).toBe(0x0201);
    // Skipping the security stage when CHAP is required is refused.
    const skip = new LoginNegotiator(ctx(chap)).handle(login({ csg: 1, nsg: 3, transit: true, text: [['InitiatorName', 'i'], ['TargetName', TARGET]] }));
    expect(status(skip.response.bhs)).toBe(0x0201);
  });

  it('splits a long answer with the Continue bit and waits for empty requests', () => {
    const n = new LoginNegotiator(ctx());
    const many: Array<[string, string]> = Array.from({ length: 200 }, (_, i) => [`X-unknown.${'k'.repeat(40)}${i}`, 'v']);
    const r = n.handle(login({ csg: 0, text: [['InitiatorName', 'i'], ['TargetName', TARGET], ...many] }));
    expect(r.response.bhs[1]! & 0x40).toBe(0x40);
    expect(r.response.data.length).toBe(8192);
    let all = Buffer.from(r.response.data);
    for (let i = 0; i < 10; i++) {
      const next = n.handle(login({ csg: 0, text: [] }));
      all = Buffer.concat([all, next.response.data]);
      if ((next.response.bhs[1]! & 0x40) === 0) break;
    }
    expect(Object.keys(keys(all)).filter((k) => k.startsWith('X-')).length).toBe(200);
    expect(all.length).toBeGreaterThan(8192);
  });
});
