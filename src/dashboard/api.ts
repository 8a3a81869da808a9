/**
 * The dashboard's link to the daemon: JSON requests and the live event stream, both with the
 * token in the Authorization header (never in URLs or cookies, docs/security.md). The token lives
 * in sessionStorage (gone with the tab). A 401 anywhere logs out.
 */

const TOKEN_KEY = 'rebound.token';

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

let onLogout: () => void = () => undefined;
export function setLogoutHandler(f: () => void): void {
  onLogout = f;
}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}
export function setToken(t: string | null): void {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${token() ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  const data = await r.json().catch(() => null);
  if (r.status === 401) {
    setToken(null);
    onLogout();
  }
  if (!r.ok) throw new ApiError(r.status, data?.error?.code ?? 'ERR_HTTP', data?.error?.message ?? `${method} ${path}: HTTP ${r.status}`);
  return data as T;
}

export interface LiveEvent {
  id: number;
  type: string;
  at: string;
  vm?: string;
  data: any;
}

/**
 * Reads GET /v1/events with fetch() (EventSource cannot send Authorization) until `signal`
 * aborts; reconnects after a pause when the stream ends (daemon restart, slow-client drop).
 */
export async function streamEvents(onEvent: (e: LiveEvent) => void, onStatus: (live: boolean) => void, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    try {
      const r = await fetch('/v1/events', { headers: { authorization: `Bearer ${token() ?? ''}` }, signal, cache: 'no-store' });
      if (r.status === 401) {
        setToken(null);
        onLogout();
        return;
      }
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      onStatus(true);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          if (data) onEvent(JSON.parse(data) as LiveEvent);
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    onStatus(false);
    await new Promise((r) => setTimeout(r, 3000));
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  let i = 0;
  let v = n;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${UNITS[i]}`;
}

export function duration(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return '–';
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}
