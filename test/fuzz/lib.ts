/**
 * The fuzz harness shared by the short runs (test/fuzz/*.test.ts, vitest) and the long runs
 * (tools/fuzz/run.mjs, node). A target is a fast-check arbitrary (structure-aware inputs), an
 * oracle (`check` throws when what must hold does not) and, for servers, a liveness check run
 * every `liveness.every` inputs and at the end. Runs are bounded by input count and seeded: the
 * same seed gives the same inputs, and a failure prints the seed and path that replay it.
 *
 * Hangs: every input runs under `timeoutMs`; an async operation that never settles fails the run
 * with the input. A synchronous endless loop cannot be interrupted in-process: run.mjs watches the
 * progress counter from its parent process for that case.
 */
import net from 'node:net';
import fc from 'fast-check';

export interface FuzzTarget<T, C = unknown> {
  name: string;
  /** What must hold, in one sentence (printed by run.mjs). */
  oracle: string;
  arbitrary: fc.Arbitrary<T>;
  setup?(): Promise<C>;
  /** Throws if the oracle does not hold for `input`. */
  check(input: T, ctx: C): unknown;
  /**
   * `done`: inputs run so far. `measure`, if any, runs before each check and outside its time
   * limit (daemon mode: RSS samples that pause the inputs for a while).
   */
  liveness?: { every: number; check(ctx: C, done: number): Promise<void>; measure?(ctx: C, done: number): Promise<void> };
  teardown?(ctx: C): Promise<void>;
  /** Extra figures for the summary (daemon mode: the daemon's RSS), taken before teardown. */
  report?(ctx: C): Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Per input (default 5 s). */
  timeoutMs?: number;
}

export interface FuzzResult {
  target: string;
  seed: number;
  runs: number;
  ms: number;
  livenessChecks: number;
  rssBefore: number;
  rssAfter: number;
  failure?: string;
  report?: Record<string, unknown>;
}

export interface FuzzOptions {
  runs: number;
  seed: number;
  /** Replays one failing input (fast-check's path from a failure report). */
  path?: string;
  onProgress?(done: number): void;
}

export class OracleFailure extends Error {
  override name = 'OracleFailure';
}

export function withTimeout<T>(p: Promise<T> | T, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    Promise.resolve(p),
    new Promise<never>((_, reject) => (t = setTimeout(() => reject(new OracleFailure(`hang: ${what} did not settle in ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(t));
}

export async function runFuzz<T, C>(target: FuzzTarget<T, C>, opts: FuzzOptions): Promise<FuzzResult> {
  const ctx = (target.setup ? await target.setup() : undefined) as C;
  const timeoutMs = target.timeoutMs ?? 5000;
  let done = 0;
  let livenessChecks = 0;
  const live = async (): Promise<void> => {
    if (!target.liveness) return;
    livenessChecks++;
    await target.liveness.measure?.(ctx, done);
    await withTimeout(target.liveness.check(ctx, done), 10_000, `${target.name} liveness check`);
  };
  const rssBefore = process.memoryUsage().rss;
  const t0 = Date.now();
  let failure: string | undefined;
  let report: Record<string, unknown> | undefined;
  try {
    await live();
    const property = fc.asyncProperty(target.arbitrary, async (input) => {
      await withTimeout(target.check(input, ctx), timeoutMs, `${target.name} input`);
      done++;
      if (target.liveness && done % target.liveness.every === 0) await live();
      opts.onProgress?.(done);
    });
    const r = await fc.check(property, { seed: opts.seed, numRuns: opts.runs, path: opts.path });
    if (r.failed) {
      const err = r.errorInstance as Error | undefined;
      failure = `${fc.defaultReportMessage(r) ?? 'failed'}\nError: ${err?.name}: ${err?.message}`;
    }
    else await live();
  } finally {
    report = await target.report?.(ctx);
    if (target.teardown) await target.teardown(ctx);
  }
  return { target: target.name, seed: opts.seed, runs: done, ms: Date.now() - t0, livenessChecks, rssBefore, rssAfter: process.memoryUsage().rss, failure, report };
}

export function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof (err as { code: unknown }).code === 'string' ? (err as { code: string }).code : undefined;
}

/** Throws OracleFailure unless `err` is a ReboundError with one of `codes`. */
export function expectCode(err: unknown, codes: readonly string[], where: string): void {
  if ((err as Error)?.name === 'ReboundError' && codes.includes(errorCode(err)!)) return;
  throw new OracleFailure(`${where}: expected ${codes.join(' or ')}, got ${(err as Error)?.name}: ${(err as Error)?.message}`);
}

export const u32 = (): fc.Arbitrary<number> => fc.integer({ min: 0, max: 0xffffffff });

/** `arb` one time in `n`, else null (fc.option's `freq` is the other way round: null one time in freq). */
export const rarely = <T>(arb: fc.Arbitrary<T>, n: number): fc.Arbitrary<T | null> =>
  fc.oneof({ weight: n - 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: arb });

/**
 * Sends the bytes and half-closes (at once, or after the server has been quiet for 3 ms, at most
 * 100 ms, so that replies are written while the client still listens); drains; resolves when the
 * server has closed the connection. `to`: a Unix socket path or a loopback TCP port. A server
 * that keeps the connection open `closeMs` after the client's EOF is a hang (OracleFailure).
 */
export function feedConnection(to: string | { port: number }, bytes: Buffer, linger: boolean, closeMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = typeof to === 'string' ? net.connect(to) : net.connect({ host: '127.0.0.1', port: to.port });
    let timer: NodeJS.Timeout | undefined;
    const armHang = (): void => {
      timer = setTimeout(() => {
        s.destroy();
        reject(new OracleFailure(`hang: the server kept the connection open ${closeMs} ms after the client's EOF (${bytes.length} bytes sent: ${bytes.toString('hex').slice(0, 400)})`));
      }, closeMs);
    };
    let quiet: NodeJS.Timeout | undefined;
    let cap: NodeJS.Timeout | undefined;
    const finish = (): void => {
      clearTimeout(quiet);
      clearTimeout(cap);
      if (!timer) {
        s.end();
        armHang();
      }
    };
    s.on('error', () => undefined); // EPIPE/ECONNRESET when the server drops a bad client: expected
    s.on('close', () => {
      clearTimeout(timer);
      clearTimeout(quiet);
      clearTimeout(cap);
      resolve();
    });
    s.on('data', () => {
      if (!linger || timer) return;
      clearTimeout(quiet);
      quiet = setTimeout(finish, 3);
    });
    s.on('connect', () => {
      if (!linger) {
        s.end(bytes);
        armHang();
        return;
      }
      s.write(bytes);
      quiet = setTimeout(finish, 3);
      cap = setTimeout(finish, 100);
    });
  });
}
