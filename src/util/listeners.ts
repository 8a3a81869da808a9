/**
 * listen(): adds a set of event listeners and gives back the function that removes exactly them,
 * for readers that hand a stream over to another (ByteReader.detach, the TLS record tap).
 */
import type { EventEmitter } from 'node:events';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Listeners = Record<string, (...args: any[]) => void>;

export function listen(emitter: EventEmitter, listeners: Listeners): () => void {
  for (const [ev, fn] of Object.entries(listeners)) emitter.on(ev, fn);
  return () => {
    for (const [ev, fn] of Object.entries(listeners)) emitter.off(ev, fn);
  };
}
