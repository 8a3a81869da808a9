/**
 * File bytes straight to a socket (sendfile(2), at once or on libuv's thread pool), through
 * rebound's native addon (src/native/send-file.c). Used for NBD READ replies of raw file exports on plain
 * connections: the bytes go from the page cache to the socket without being copied into and out
 * of a Buffer in this process (nbdcopy of a raw export: the daemon's CPU per GiB falls by about
 * two thirds).
 *
 * Optional like the rest of the addon: `fileSender()` is undefined without it, and
 * `socketDescriptor()` is undefined for a stream that has no descriptor of its own (TLS).
 */
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { addonFunctions } from './addon.js';
import { handleDescriptor } from './socket-buffer.js';

/** What one send achieved: `sent` bytes of header and file; `stalled` when the reader took none for a while. */
export interface FileSendResult {
  sent: number;
  stalled: boolean;
}

/** The two ways to send: on the thread pool, waiting up to stallMs at a time for room; or at once, without waiting. */
export interface FileSender {
  send(socketFd: number, header: Uint8Array, fileFd: number, position: number, length: number, stallMs: number): Promise<FileSendResult>;
  /** Returns the bytes sent (fewer when the socket filled up); throws FileShrank or an errno-coded Error. */
  sendNow(socketFd: number, header: Uint8Array, fileFd: number, position: number, length: number): number;
}

interface SendFileFns {
  sendFileSpanNow(socketFd: number, header: Uint8Array, fileFd: number, position: number, length: number): number;
  sendFileSpan(socketFd: number, header: Uint8Array, fileFd: number, position: number, length: number, stallMs: number, cb: (errno: number, sent: number) => void): void;
}

/** The errno values by number, for error codes (EPIPE, ECONNRESET...). */
const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

/** Thrown when the file ended before the span did (it was truncated while exported). */
export class FileShrank extends Error {
  constructor() {
    super('the file ended before the requested range: it was truncated while exported');
    this.name = 'FileShrank';
  }
}

/** A failed send as an Error: FileShrank for ENODATA (the file ended early), else coded with the errno's name. */
function sendFailure(errno: number): Error {
  const code = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
  return code === 'ENODATA' ? new FileShrank() : Object.assign(new Error(`sendfile: ${code}`), { code, errno });
}

let sender: FileSender | null | undefined;

/** The native sender; undefined when the addon is missing. Failures are errno-coded Errors, or FileShrank. */
export function fileSender(): FileSender | undefined {
  if (sender === undefined) {
    const fns = addonFunctions<SendFileFns>('sendFileSpan', 'sendFileSpanNow');
    sender = fns
      ? {
          send: (socketFd, header, fileFd, position, length, stallMs) =>
            new Promise<FileSendResult>((resolve, reject) => {
              fns.sendFileSpan(socketFd, header, fileFd, position, length, stallMs, (errno, sent) => {
                if (errno === 0) resolve({ sent, stalled: sent < header.length + length });
                else reject(sendFailure(errno));
              });
            }),
          sendNow: (socketFd, header, fileFd, position, length) => {
            const sent = fns.sendFileSpanNow(socketFd, header, fileFd, position, length);
            if (sent < 0) throw sendFailure(-sent);
            return sent;
          },
        }
      : null;
  }
  return sender ?? undefined;
}

/** The descriptor of a plain (not TLS) connected socket, or undefined. */
export function socketDescriptor(stream: Duplex): number | undefined {
  if (!(stream instanceof net.Socket) || stream instanceof tls.TLSSocket) return undefined;
  return handleDescriptor(stream);
}
