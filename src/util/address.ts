import { ReboundError } from '../errors.js';

export interface TcpAddress {
  host: string;
  port: number;
}

/**
 * Parses a listen address: `HOST:PORT`, `[IPv6]:PORT`, or a bare `PORT` (bound to 127.0.0.1, the
 * safe default: nothing is exposed beyond the machine unless asked for). Port 0 picks a free port.
 */
export function parseTcpAddress(text: string, defaultHost = '127.0.0.1'): TcpAddress {
  const trimmed = text.trim();
  let host: string;
  let portText: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(trimmed);
  if (v6) {
    host = v6[1]!;
    portText = v6[2]!;
  } else if (/^\d+$/.test(trimmed)) {
    host = defaultHost;
    portText = trimmed;
  } else {
    const i = trimmed.lastIndexOf(':');
    if (i <= 0 || trimmed.indexOf(':') !== i) {
      throw new ReboundError('ERR_INVALID_ADDRESS', `invalid address '${text}': expected HOST:PORT, [IPv6]:PORT or PORT`);
    }
    host = trimmed.slice(0, i);
    portText = trimmed.slice(i + 1);
  }
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) {
    throw new ReboundError('ERR_INVALID_ADDRESS', `invalid port in '${text}': expected 0-65535`);
  }
  return { host, port };
}

export function formatTcpAddress(addr: TcpAddress): string {
  return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}
