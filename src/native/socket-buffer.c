/*
 * The send buffer of a connected socket, which Node does not let a net.Socket set (part of
 * rebound's native addon, see addon.c; src/native/socket-buffer.ts loads it).
 *
 *   setSendBuffer(fd, bytes) -> the socket's send buffer afterwards (getsockopt SO_SNDBUF; Linux
 *                               reports twice the size asked for, its bookkeeping included)
 *
 * SO_SNDBUFFORCE first (root, which the daemon is, may exceed net.core.wmem_max), SO_SNDBUF when
 * that is refused (EPERM: not root); the kernel caps the latter at wmem_max. Other failures throw
 * an Error whose `code` is the errno name (EBADF, ENOTSOCK, EINVAL).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include "addon.h"

static napi_value set_send_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd, bytes;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &bytes) != napi_ok || fd < 0 || bytes <= 0) {
    napi_throw_type_error(env, "EINVAL", "expected (fd, bytes): non-negative fd, positive size");
    return NULL;
  }
  int err = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0) {
    err = errno;
    if (err == EPERM && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes) == 0) err = 0;
    else if (err == EPERM) err = errno;
  }
  int now = 0;
  socklen_t len = sizeof now;
  if (!err && getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &now, &len) != 0) err = errno;
  if (err) {
    const char *name = err == EBADF ? "EBADF" : err == ENOTSOCK ? "ENOTSOCK" : "EINVAL";
    napi_throw_error(env, name, strerror(err));
    return NULL;
  }
  napi_value out;
  napi_create_int32(env, now, &out);
  return out;
}

void register_socket_buffer(napi_env env, napi_value exports) {
  export_function(env, exports, "setSendBuffer", set_send_buffer);
}
