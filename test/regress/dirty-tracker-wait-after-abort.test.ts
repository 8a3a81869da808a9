/**
 * Regress: DirtyTracker.whenDirty(signal) with a signal that was already aborted never settled
 * (it waited for an 'abort' event that had fired before it listened). A migration stopped while
 * its copier was awaiting something else (a state save) then hung on its next wait, and with it
 * the daemon's shutdown. Found by test/unit/recovery/durable-switch.test.ts (1 run in 6 hung).
 */
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/base/memory.js';
import { DirtyTracker } from '../../src/blockdev/layers/dirty-tracker.js';

describe('regress: waiting for dirty units with an aborted signal', () => {
  it('rejects at once with the abort reason', async () => {
    const t = new DirtyTracker(new MemoryDevice(1 << 20), 65536);
    t.start();
    const ac = new AbortController();
    ac.abort(new Error('stopped before the wait'));
    await expect(t.whenDirty(ac.signal)).rejects.toThrow('stopped before the wait');
  });
});
