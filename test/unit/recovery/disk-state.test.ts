/** The recovered disk's state machine and the session record's versions. */
import { describe, expect, it } from 'vitest';
import { checkTransition, DISK_STATES, overlayAuthoritative, TRANSITIONS } from '../../../src/recovery/disk-state.js';
import { parseRecord, SESSION_VERSION } from '../../../src/recovery/session-record.js';

describe('disk states', () => {
  it('allows exactly the written-down transitions', () => {
    for (const from of DISK_STATES) {
      for (const to of DISK_STATES) {
        if (TRANSITIONS[from].includes(to)) expect(() => checkTransition('d', from, to)).not.toThrow();
        else expect(() => checkTransition('d', from, to)).toThrow(expect.objectContaining({ code: 'ERR_SESSION_STATE', message: `disk d is ${from}; it cannot become ${to}` }));
      }
    }
    // Once the target is authoritative there is no way back to the overlay, and no discard.
    expect(TRANSITIONS.switched).toEqual(['retired']);
    expect(TRANSITIONS.retired).toEqual([]);
    expect(DISK_STATES.filter(overlayAuthoritative)).toEqual(['running', 'copying', 'in-step', 'paused', 'switching', 'discarded']);
  });
});

describe('session record versions', () => {
  const v1 = (disks: unknown[]): unknown => ({
    format: 'rebound-session', version: 1, name: 's', vm: 'vm', pointId: 'p', createdAt: '2026-11-22T03:00:00.000Z', quota: null, qos: {}, publish: { nbd: true, nfs: false }, disks, commits: [],
  });
  const mig = (state: string) => ({ target: '/t', rate: null, state, cursor: 5, copiedBytes: 5, error: null, startedAt: 'a', updatedAt: 'b', switchedAt: null, verified: null });

  it('upgrades version 1: one disk state, FUSE publishing as before', () => {
    const r = parseRecord(v1([
      { name: 'a', size: 1, overlayRetired: false, migration: null },
      { name: 'b', size: 1, overlayRetired: false, migration: mig('synced') },
      { name: 'c', size: 1, overlayRetired: false, migration: mig('cancelled') },
      { name: 'd', size: 1, overlayRetired: false, migration: mig('switching') },
      { name: 'e', size: 1, overlayRetired: true, migration: mig('switched') },
    ]));
    expect(r.version).toBe(SESSION_VERSION);
    expect(r.publish).toEqual({ nbd: true, nfs: false, fuse: true });
    expect(r.disks.map((d) => [d.name, d.state])).toEqual([['a', 'running'], ['b', 'in-step'], ['c', 'paused'], ['d', 'switching'], ['e', 'retired']]);
    expect(r.disks[1]!.migration).toEqual({ target: '/t', rate: null, cursor: 5, copiedBytes: 5, error: null, startedAt: 'a', updatedAt: 'b', switchedAt: null, verified: null });
    expect(r.disks[2]!.migration!.error).toBe('cancelled');
  });

  it('refuses unknown versions, formats and states with a reason', () => {
    expect(() => parseRecord({ format: 'x' })).toThrow(/not a session record/);
    expect(() => parseRecord({ format: 'rebound-session', version: 9 })).toThrow(/session format 9 is not supported/);
    expect(() => parseRecord(v1([{ name: 'a', size: 1, overlayRetired: false, migration: mig('warping') }]))).toThrow(/unknown migration state 'warping'/);
    expect(() => parseRecord({ format: 'rebound-session', version: 2, name: 's', disks: [{ name: 'a', state: 'warping' }] })).toThrow(/unknown state 'warping'/);
  });
});
