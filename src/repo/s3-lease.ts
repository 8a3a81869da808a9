/**
 * Coordination between gateways sharing one bucket, with objects under `PREFIX/locks/`:
 *  - the maintenance lease `locks/maintenance.json` (gc, prune): taken by a conditional create
 *    (If-None-Match: *, measured on Ceph RGW 16.2.15: the second create gets 412), so two gateways
 *    never sweep or prune at once. It carries its holder, purpose, phase and an expiry, renewed
 *    every TTL/3 while held; an expired lease (its holder died) is deleted and taken again.
 *  - backup markers `locks/backups/<gateway>-<random>.json`: one per running backup, renewed the
 *    same way, deleted when the backup ends (committed or not).
 *
 * The rule that keeps gc from deleting a chunk a just-committed point uses (gc-s3.ts):
 *   gc:     set the lease's phase to 'sweep', then wait until no live backup marker is left, then
 *           re-read every manifest, then delete.
 *   backup: write its marker, then read the lease; while a live lease says 'sweep', wait.
 * With a strongly consistent store (Ceph RGW; AWS S3 since 2020) one of the two always sees the
 * other: a backup that missed the sweep phase wrote its marker before gc looked for markers, so
 * gc waits for it and then marks its point.
 *
 * Left out: an expired lease is broken with a delete and a new conditional create; two gateways
 * breaking the same expired lease at the same instant could both delete before either creates
 * (then both believe they hold it). It needs a holder dead for longer than the TTL and a race of
 * a few milliseconds; RGW 16 answered 412 to If-Match with the right ETag, so a compare-and-swap
 * takeover was not available.
 */
import crypto from 'node:crypto';
import { ReboundError } from '../errors.js';
import type { S3Objects } from './s3-objects.js';

export const MAINTENANCE_LEASE = 'locks/maintenance.json';
export const BACKUP_MARKERS = 'locks/backups/';

export interface LeaseBody {
  gateway: string;
  pid: number;
  purpose: string;
  phase: string;
  acquiredAt: string;
  expiresAt: string;
}

export interface LeaseTiming {
  /** A lease or marker not renewed for this long is dead, ms. */
  ttlMs: number;
  /** How often waiters look again, ms. */
  pollMs: number;
}

export const DEFAULT_LEASE_TIMING: LeaseTiming = { ttlMs: 120_000, pollMs: 1000 };

/** How often a failed release is tried again in the background, ms. */
const RELEASE_RETRY_MS = 3000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function parseBody(buf: Buffer | undefined): LeaseBody | undefined {
  if (!buf) return undefined;
  try {
    const b = JSON.parse(buf.toString('utf8')) as LeaseBody;
    return typeof b?.expiresAt === 'string' ? b : undefined;
  } catch {
    return undefined;
  }
}

function live(b: LeaseBody | undefined): b is LeaseBody {
  return b !== undefined && Date.parse(b.expiresAt) > Date.now();
}

/** A renewed object (the lease, a backup marker) that this process holds. */
class Held {
  readonly #objects: S3Objects;
  readonly #key: string;
  readonly #timing: LeaseTiming;
  #body: LeaseBody;
  #timer: NodeJS.Timeout | undefined;
  #released = false;

  constructor(objects: S3Objects, key: string, body: LeaseBody, timing: LeaseTiming) {
    this.#objects = objects;
    this.#key = key;
    this.#body = body;
    this.#timing = timing;
    this.#timer = setInterval(() => void this.#write().catch(() => undefined), Math.max(50, timing.ttlMs / 3));
    this.#timer.unref();
  }

  get body(): LeaseBody {
    return { ...this.#body };
  }

  async setPhase(phase: string): Promise<void> {
    this.#body = { ...this.#body, phase };
    await this.#write();
  }

  async #write(): Promise<void> {
    if (this.#released) return;
    this.#body = { ...this.#body, expiresAt: new Date(Date.now() + this.#timing.ttlMs).toISOString() };
    await this.#objects.put(this.#key, JSON.stringify(this.#body));
  }

  /**
   * Deletes the object. If the endpoint is away (a backup that failed because of it), deleting
   * goes on in the background every few seconds until it works or the object has expired anyway,
   * so a stale marker does not hold the next gc until its expiry.
   */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#timer);
    try {
      await this.#objects.delete(this.#key);
    } catch (err) {
      const until = Date.parse(this.#body.expiresAt);
      const again = (): void => {
        if (Date.now() > until) return;
        this.#objects.delete(this.#key).catch(() => setTimeout(again, RELEASE_RETRY_MS).unref());
      };
      setTimeout(again, RELEASE_RETRY_MS).unref();
      throw err;
    }
  }
}

export type MaintenanceLease = Held;

/** Takes the maintenance lease, or fails with ERR_REPO_BUSY naming who holds it. */
export async function takeMaintenanceLease(objects: S3Objects, gateway: string, purpose: string, timing = DEFAULT_LEASE_TIMING): Promise<MaintenanceLease> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const now = new Date();
    const body: LeaseBody = { gateway, pid: process.pid, purpose, phase: 'mark', acquiredAt: now.toISOString(), expiresAt: new Date(now.getTime() + timing.ttlMs).toISOString() };
    if (await objects.put(MAINTENANCE_LEASE, JSON.stringify(body), { ifAbsent: true })) return new Held(objects, MAINTENANCE_LEASE, body, timing);
    const holder = parseBody(await objects.get(MAINTENANCE_LEASE));
    if (live(holder)) {
      throw new ReboundError(
        'ERR_REPO_BUSY',
        `${purpose} refused: gateway ${holder.gateway} is running ${holder.purpose} on this repository (since ${holder.acquiredAt}; ` +
          `lease ${objects.url(MAINTENANCE_LEASE)} expires ${holder.expiresAt} unless renewed). Try again when it is done`,
        { details: { holder } },
      );
    }
    // Gone meanwhile, unreadable, or expired (its holder died): remove it and try again.
    if (holder) await objects.delete(MAINTENANCE_LEASE);
  }
  throw new ReboundError('ERR_REPO_BUSY', `${purpose} refused: the maintenance lease ${objects.url(MAINTENANCE_LEASE)} keeps changing hands`);
}

/** Live backup markers (of every gateway); expired ones (their backup died) are deleted. */
export async function liveBackupMarkers(objects: S3Objects): Promise<LeaseBody[]> {
  const out: LeaseBody[] = [];
  for await (const o of objects.list(BACKUP_MARKERS)) {
    const b = parseBody(await objects.get(o.key));
    if (live(b)) out.push(b);
    else if (b) await objects.delete(o.key);
  }
  return out;
}

/**
 * Registers a running backup (see the design notes): writes its marker, then waits while a gc
 * sweeps. Resolves with the function that removes the marker.
 */
export async function registerBackup(objects: S3Objects, gateway: string, timing = DEFAULT_LEASE_TIMING, signal?: AbortSignal): Promise<() => Promise<void>> {
  const now = new Date();
  const key = `${BACKUP_MARKERS}${gateway}-${crypto.randomBytes(6).toString('hex')}.json`;
  const body: LeaseBody = { gateway, pid: process.pid, purpose: 'backup', phase: 'running', acquiredAt: now.toISOString(), expiresAt: new Date(now.getTime() + timing.ttlMs).toISOString() };
  await objects.put(key, JSON.stringify(body));
  const held = new Held(objects, key, body, timing);
  try {
    for (;;) {
      const lease = parseBody(await objects.get(MAINTENANCE_LEASE));
      if (!live(lease) || lease.phase !== 'sweep') break;
      signal?.throwIfAborted();
      await sleep(timing.pollMs);
    }
  } catch (err) {
    await held.release().catch(() => undefined);
    throw err;
  }
  return () => held.release();
}

/** Waits until no live backup marker is left (gc before its sweep); gives up after `maxWaitMs`. */
export async function waitForBackups(objects: S3Objects, maxWaitMs: number, timing = DEFAULT_LEASE_TIMING, signal?: AbortSignal): Promise<number> {
  const deadline = Date.now() + maxWaitMs;
  let waitedFor = 0;
  for (;;) {
    const markers = await liveBackupMarkers(objects);
    if (markers.length === 0) return waitedFor;
    waitedFor = Math.max(waitedFor, markers.length);
    if (Date.now() > deadline) {
      throw new ReboundError(
        'ERR_REPO_BUSY',
        `gc stopped before deleting anything: ${markers.length} backup(s) still running (${markers.map((m) => `${m.gateway} since ${m.acquiredAt}`).join(', ')}) after waiting ${Math.round(maxWaitMs / 1000)} s`,
      );
    }
    signal?.throwIfAborted();
    await sleep(timing.pollMs);
  }
}
