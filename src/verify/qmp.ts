/**
 * A minimal QMP client (QEMU Machine Protocol over a Unix socket): the greeting, capabilities
 * negotiation, one command at a time answered in order, events to a callback. Enough for `cont`,
 * `screendump`, `query-status` and `quit`; the connection closing fails what is pending.
 */
import net from 'node:net';
import { ReboundError } from '../errors.js';

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

export class QmpClient {
  readonly #sock: net.Socket;
  readonly #pending: Pending[] = [];
  #buf = '';
  #closed: Error | undefined;
  onEvent: (event: string, data: unknown) => void = () => {};

  private constructor(sock: net.Socket) {
    this.#sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.#data(d));
    const end = (err?: Error): void => {
      this.#closed ??= err ?? new Error('QMP connection closed');
      for (const p of this.#pending.splice(0)) p.reject(this.#closed);
    };
    sock.on('error', end);
    sock.on('close', () => end());
  }

  static async connect(socketPath: string): Promise<QmpClient> {
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(socketPath);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    const c = new QmpClient(sock);
    await c.#next(); // the greeting
    await c.execute('qmp_capabilities');
    return c;
  }

  #greeting: Pending | undefined;
  #next(): Promise<unknown> {
    return new Promise((resolve, reject) => (this.#greeting = { resolve, reject }));
  }

  #data(d: string): void {
    this.#buf += d;
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (!line) continue;
      let msg: { QMP?: unknown; event?: string; data?: unknown; return?: unknown; error?: { desc?: string } };
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      if (msg.QMP && this.#greeting) {
        this.#greeting.resolve(msg);
        this.#greeting = undefined;
      } else if (msg.event) this.onEvent(msg.event, msg.data);
      else {
        const p = this.#pending.shift();
        if (!p) continue;
        if (msg.error) p.reject(new ReboundError('ERR_VERIFY_UNAVAILABLE', `QEMU refused a command: ${msg.error.desc ?? 'error'}`));
        else p.resolve(msg.return);
      }
    }
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.#sock.write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) }) + '\n');
    });
  }

  close(): void {
    this.#sock.destroy();
  }
}
