/**
 * A larger kernel send buffer for a connected socket, through rebound's native addon
 * (src/native/socket-buffer.c; Node cannot set SO_SNDBUF on a net.Socket).
 *
 * Why: a Unix stream socket's send buffer is net.core.wmem_default (208 KiB on Debian), and a
 * sender may have no more than that in flight to its reader. An NBD reply of 1 MiB then leaves in
 * four or five writes, each after an EAGAIN and an epoll wake-up, and a reader with eight such
 * requests in flight waits on the ping-pong (fio 1 MiB sequential reads over a Unix socket: about
 * 1,200 MiB/s at 208 KiB, about 2,100 MiB/s at 4 MiB, measured on this project's 2-core box). TCP
 * sockets are left alone: the kernel grows their buffers itself (tcp_wmem autotuning), and setting
 * SO_SNDBUF would switch that off.
 *
 * Optional like the rest of the addon: without it, or for a socket without a descriptor, nothing
 * changes and the caller learns so (undefined).
 */
import type net from 'node:net';
import { addonFunctions } from './addon.js';

/** The send buffer rebound asks for on Unix stream sockets that carry NBD (the kernel reports twice this). */
export const UNIX_SEND_BUFFER = 2 * 1024 * 1024;

interface SocketBufferFns {
  setSendBuffer(fd: number, bytes: number): number;
}

/** The descriptor of a connected net.Socket's libuv handle (TCP or pipe), or undefined. */
export function handleDescriptor(socket: net.Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * Asks for a send buffer of `bytes` on `socket`; resolves to the size the kernel reports afterwards
 * (twice the request on Linux: it counts its bookkeeping), or undefined when it could not be set.
 */
export function enlargeSendBuffer(socket: net.Socket, bytes: number): number | undefined {
  const fns = addonFunctions<SocketBufferFns>('setSendBuffer');
  const fd = handleDescriptor(socket);
  if (!fns || fd === undefined) return undefined;
  try {
    return fns.setSendBuffer(fd, bytes);
  } catch {
    return undefined;
  }
}
