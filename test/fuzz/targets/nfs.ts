/**
 * Fuzz target `nfs`: an in-process NfsServer (test/helpers/nfs-fixture.ts startInProcess: session
 * s1 with a 4 MiB memory disk, on 127.0.0.1:0). Each input is one TCP connection carrying
 * record-marked ONC RPC calls with random fields: message type, RPC version, program (NFS, MOUNT,
 * portmap or random), version, procedure (every NFSv3/MOUNT procedure or random), credential
 * (AUTH_SYS well-formed or random, AUTH_NONE, random flavor), and XDR arguments built from real
 * file handles (the root, the session's directory, its flat disk file) or random opaque handles,
 * followed by random words, strings and offsets; records split into random fragments, the last
 * fragment bit sometimes missing, the stream sometimes cut. The client half-closes and drains.
 * One input in six goes to the portmapper's port instead (PORTMAP v2, rpcbind v3/v4 with random
 * rpcb arguments); names include the XenServer SR folder (/xen/SR-UUID).
 *
 * Oracle: the server closes each connection within 3 s of the client's EOF; every 50 inputs and
 * at the end a fresh client MOUNTs /, GETATTRs the root and READs 64 KiB of the flat disk file
 * with the bytes the disk holds.
 *
 * Daemon mode (test/fuzz/daemon.ts): the same inputs go to a `rebound serve --demo` process's
 * datastore; the real handles are the demo restore point's folder and flat disk (read-only, so
 * the write procedures meet a read-only file); the probe checks the bytes against the demo image
 * and counts the daemon's sockets for leaks; the summary has the daemon's RSS.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { startInProcess, type InProcess } from '../../helpers/nfs-fixture.js';
import { authSys, entryNames, MOUNT, NFS, PORTMAP, RpcTestClient } from '../../helpers/nfs-rpc.js';
import { OracleFailure, rarely, u32, type FuzzTarget, feedConnection } from '../lib.js';
import { daemonMode, FuzzDaemon } from '../daemon.js';

type Part = Buffer | 'root' | 'sdir' | 'flat';

interface Call {
  head: Buffer;
  args: Part[];
}

interface Input {
  calls: Call[];
  fragment: number | null;
  dropLast: boolean;
  cut: number | null;
  /** Sent to the portmapper's port (in-process mode; the daemon runs without one). */
  toPortmap: boolean;
}

const word = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const opaque = (b: Uint8Array): Buffer => Buffer.concat([word(b.length), Buffer.from(b), Buffer.alloc((4 - (b.length % 4)) % 4)]);

const argPart: fc.Arbitrary<Part> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom<Part>('root', 'sdir', 'flat') },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 80 }).map(opaque) },
  { weight: 3, arbitrary: fc.oneof(fc.constantFrom(0, 1, 2, 3, 0x1ff, 4096, 65536), u32()).map(word) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((v) => Buffer.concat([word(Number(v >> 32n)), word(Number(v & 0xffffffffn))])) },
  { weight: 2, arbitrary: fc.oneof(fc.constantFrom('disk0-flat.vmdk', 'disk0.vmdk', '.', '..', 'x', 's1', 'sessions', 'a/b', 'xen', 'tcp', 'udp6', 'sm-hardlink.conf'), fc.string({ maxLength: 300 })).map((s) => opaque(Buffer.from(s))) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)) },
);

const call: fc.Arbitrary<Call> = fc
  .record({
    xid: u32(),
    msgType: fc.oneof({ weight: 12, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: u32() }),
    rpcVers: fc.oneof({ weight: 12, arbitrary: fc.constant(2) }, { weight: 1, arbitrary: u32() }),
    prog: fc.oneof({ weight: 6, arbitrary: fc.constant(NFS) }, { weight: 3, arbitrary: fc.constant(MOUNT) }, { weight: 1, arbitrary: fc.constant(PORTMAP) }, { weight: 1, arbitrary: u32() }),
    vers: fc.oneof({ weight: 8, arbitrary: fc.constant(3) }, { weight: 1, arbitrary: fc.constantFrom(1, 2, 4) }, { weight: 1, arbitrary: u32() }),
    proc: fc.oneof({ weight: 10, arbitrary: fc.nat({ max: 21 }) }, { weight: 1, arbitrary: u32() }),
    cred: fc.oneof(
      { weight: 6, arbitrary: fc.record({ uid: fc.oneof(fc.constant(0), u32()), gid: fc.oneof(fc.constant(0), u32()) }).map(({ uid, gid }) => Buffer.concat([word(1), opaque(authSys(uid, gid))])) },
      { weight: 1, arbitrary: fc.constant(Buffer.concat([word(0), word(0)])) },
      { weight: 1, arbitrary: fc.tuple(fc.oneof(fc.constantFrom(0, 1, 6), u32()), fc.uint8Array({ maxLength: 500 })).map(([f, b]) => Buffer.concat([word(f), opaque(b)])) },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom(0, 1), u32()).map(([f, len]) => Buffer.concat([word(f), word(len)])) },
    ),
    verf: fc.oneof({ weight: 8, arbitrary: fc.constant(Buffer.concat([word(0), word(0)])) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.concat([word(0), opaque(b)])) }),
    args: fc.array(argPart, { maxLength: 8 }),
  })
  .map((c) => ({ head: Buffer.concat([word(c.xid), word(c.msgType), word(c.rpcVers), word(c.prog), word(c.vers), word(c.proc), c.cred, c.verf]), args: c.args }));

const input: fc.Arbitrary<Input> = fc.record({
  calls: fc.array(call, { minLength: 1, maxLength: 6 }),
  fragment: rarely(fc.integer({ min: 1, max: 64 }), 4),
  dropLast: fc.nat({ max: 7 }).map((n) => n === 0), // one call in eight never ends its record
  cut: rarely(fc.nat(), 6),
  toPortmap: fc.nat({ max: 5 }).map((n) => n === 0),
});

interface Ctx {
  dir: string;
  port: number;
  /** The portmapper's port (the NFS port when there is none). */
  portmap: number;
  /** The bytes the flat disk holds at [off, off + len). */
  want(off: number, len: number): Promise<Buffer>;
  /** In-process mode. */
  srv?: InProcess;
  /** Daemon mode. */
  daemon?: FuzzDaemon;
  fh: Record<'root' | 'sdir' | 'flat', Buffer>;
}

function records(inp: Input, fh: Ctx['fh']): Buffer {
  const out: Buffer[] = [];
  inp.calls.forEach((c, i) => {
    const payload = Buffer.concat([c.head, ...c.args.map((p) => (typeof p === 'string' ? opaque(fh[p]) : p))]);
    const frag = inp.fragment ?? (payload.length || 1);
    for (let off = 0; off < payload.length || off === 0; off += frag) {
      const piece = payload.subarray(off, off + frag);
      const last = off + frag >= payload.length && !(inp.dropLast && i === inp.calls.length - 1);
      out.push(word(((last ? 0x80000000 : 0) | piece.length) >>> 0), piece);
      if (payload.length === 0) break;
    }
  });
  const all = Buffer.concat(out);
  return inp.cut === null ? all : all.subarray(0, inp.cut % (all.length + 1));
}


export function nfsTarget(): FuzzTarget<Input, Ctx> {
  return {
    name: 'nfs',
    oracle: 'the NFS/MOUNT server closes each fuzzed connection within 3 s of the client EOF; every 50 inputs a fresh client MOUNTs, GETATTRs and READs the disk bytes',
    arbitrary: input,
    timeoutMs: 5000,
    setup: async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-fuzz-nfs-'));
      if (daemonMode) {
        const data = path.join(dir, 'data');
        const daemon = await FuzzDaemon.start(['--data', data, '--nbd', '127.0.0.1:0', '--demo', '--nfs', '127.0.0.1:0', '--portmap', 'off']);
        const port = Number(/NFS: datastore at [^ ]*:(\d+)/.exec(daemon.proc.stdout())?.[1]);
        const image = fs.readFileSync(path.join(data, 'demo', 'demo-disk.img'));
        const c = await RpcTestClient.connect(port);
        try {
          const root = (await c.mount('/')).fh!;
          const vm = await c.lookupPath(root, 'backups/demo');
          const point = entryNames(await c.readdirplus(vm)).find((n) => /^\d{8}T\d{6}Z$/.test(n))!;
          const sdir = await c.lookupPath(vm, point);
          const fh = { root, sdir, flat: await c.lookupPath(sdir, 'disk0-flat.vmdk') };
          return { dir, port, portmap: port, daemon, fh, want: async (off: number, len: number) => image.subarray(off, off + len) };
        } finally {
          c.close();
        }
      }
      const srv = await startInProcess(path.join(dir, 'state'), path.join(dir, 's1'));
      const portmap = (await srv.server.listenPortmap('127.0.0.1', 0)).port;
      const c = await RpcTestClient.connect(srv.port);
      try {
        const root = (await c.mount('/')).fh!;
        const fh = { root, sdir: await c.lookupPath(root, 'sessions/s1'), flat: await c.lookupPath(root, 'sessions/s1/disk0-flat.vmdk') };
        const want = async (off: number, len: number): Promise<Buffer> => {
          const b = Buffer.alloc(len);
          await srv.disk.read(b, off);
          return b;
        };
        return { dir, port: srv.port, portmap, srv, fh, want };
      } finally {
        c.close();
      }
    },
    check: async (inp, ctx) => feedConnection({ port: inp.toPortmap ? ctx.portmap : ctx.port }, records(inp, ctx.fh), false, 3000),
    liveness: {
      every: 50,
      measure: async (ctx, done) => ctx.daemon?.sample(done),
      check: async (ctx, done) => {
        if (ctx.daemon && ctx.daemon.proc.child.exitCode !== null) throw new OracleFailure(`the daemon exited (${ctx.daemon.proc.child.exitCode}): ${ctx.daemon.proc.stderr().slice(-2000)}`);
        const c = await RpcTestClient.connect(ctx.port);
        try {
          const m = await c.mount('/');
          if (m.status !== 0) throw new OracleFailure(`liveness MOUNT / answered ${m.status}`);
          const ga = await c.getattr(ctx.fh.root);
          if (ga.status !== 0) throw new OracleFailure(`liveness GETATTR answered ${ga.status}`);
          const r = await c.read(ctx.fh.flat, 0, 65536);
          const want = await ctx.want(0, 65536);
          if (r.status !== 0 || !Buffer.from(r.resok!.data).equals(want)) throw new OracleFailure(`liveness READ: status ${r.status}, data differs`);
        } finally {
          c.close();
        }
        if (ctx.portmap !== ctx.port) {
          const pm = await RpcTestClient.connect(ctx.portmap);
          try {
            const d = await pm.call(PORTMAP, 3, 4); // rpcbind DUMP
            if (d.kind !== 'accepted' || d.stat !== 0 || d.body.readUInt32BE(0) !== 1) throw new OracleFailure(`liveness rpcbind DUMP answered ${JSON.stringify(d).slice(0, 200)}`);
          } finally {
            pm.close();
          }
        }
        if (ctx.daemon) {
          const left = await ctx.daemon.leftoverConnections();
          if (left > 0) throw new OracleFailure(`${left} connection(s) still open in the daemon after every client left`);
        }
      },
    },
    report: (ctx) => ctx.daemon?.report() ?? {},
    teardown: async (ctx) => {
      await ctx.daemon?.stop();
      await ctx.srv?.close();
      fs.rmSync(ctx.dir, { recursive: true, force: true });
    },
  };
}
