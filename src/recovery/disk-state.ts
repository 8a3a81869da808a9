/**
 * The life of one recovered disk, as a state machine. The state is part of the session record
 * (session-record.ts) and every transition is saved durably *before* its effects
 * (RecoverySession.commit): a transition whose save fails throws and changes nothing.
 *
 *   running ──migrate──> copying ──pass 1 done, little dirty──> in-step ──switch──> switching
 *      │                  │  ^                                    │                    │
 *      │                  v  │ migrate again                      v                    v
 *      │                 paused <──────── target error, cancel ───┘     switched (target authoritative)
 *      │                                                                               │
 *      └──discard──> discarded <── (from running, copying, in-step, paused)            v
 *                                                                     retired (overlay removed)
 *
 * What each state means for the data (who is authoritative):
 *  - running, copying, in-step, paused, switching: the overlay (over the restore point) is the
 *    disk; the target, if any, is a copy in progress. After a restart in `switching` the switch
 *    never took effect (`switched` was not saved), so the copy resumes.
 *  - switched: the target is the disk; the overlay is still on disk until the final comparison
 *    retires it. After a restart the overlay is retired without the comparison.
 *  - retired: the target alone serves the disk.
 *  - discarded: the VM's writes are dropped; the session's directory is being removed (a restart
 *    finds a discarded session and finishes the removal).
 */
import { ReboundError } from '../errors.js';

export type DiskState = 'running' | 'copying' | 'in-step' | 'paused' | 'switching' | 'switched' | 'retired' | 'discarded';

export const DISK_STATES: readonly DiskState[] = ['running', 'copying', 'in-step', 'paused', 'switching', 'switched', 'retired', 'discarded'];

/** Allowed transitions: from -> the states it may go to. */
export const TRANSITIONS: Readonly<Record<DiskState, readonly DiskState[]>> = {
  running: ['copying', 'discarded'],
  copying: ['in-step', 'paused', 'discarded'],
  'in-step': ['switching', 'paused', 'discarded'],
  paused: ['copying', 'discarded'],
  // Back to in-step when the switch is refused before it took effect; paused when its final copy
  // failed; copying when a restart finds a switch that never took effect.
  switching: ['switched', 'in-step', 'paused', 'copying'],
  switched: ['retired'],
  retired: [],
  discarded: [],
};

/** The overlay (not the target) holds the disk's current data. */
export function overlayAuthoritative(s: DiskState): boolean {
  return s !== 'switched' && s !== 'retired';
}

/** A migration's copier runs (or should run after a restart) in these states. */
export function copying(s: DiskState): boolean {
  return s === 'copying' || s === 'in-step';
}

export function checkTransition(disk: string, from: DiskState, to: DiskState): void {
  if (!TRANSITIONS[from].includes(to)) {
    throw new ReboundError('ERR_SESSION_STATE', `disk ${disk} is ${from}; it cannot become ${to}`);
  }
}
