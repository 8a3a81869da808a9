/*
 * Reads from a file only what the page cache holds, never waiting for the disk (part of rebound's
 * native addon, see addon.c; util/file-io.ts calls it).
 *
 *   readCached(fd, dst, position) -> bytes read (0..dst.length; 0 at end of file), or -1 when the
 *                                    first byte is not cached (preadv2 RWF_NOWAIT said EAGAIN)
 *
 * Why: a small read served from the page cache costs ~2 us as a synchronous call and ~30 us of CPU
 * through libuv's thread pool, but a synchronous read that misses the cache stops the event loop
 * for a disk access. RWF_NOWAIT lets the caller take the cheap path exactly when it is cheap and
 * send only the misses to the thread pool. A short count means only the start was cached. Other
 * failures throw an Error whose `code` is the errno name (EBADF, EINVAL, EIO, EOPNOTSUPP when the
 * file system cannot do non-blocking reads).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include "addon.h"

static napi_value read_cached(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  double position;
  void *data;
  size_t length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || !typed_array_bytes(env, argv[1], &data, &length) ||
      napi_get_value_double(env, argv[2], &position) != napi_ok || fd < 0 || position < 0) {
    napi_throw_type_error(env, "EINVAL", "expected (fd, typed array, position >= 0)");
    return NULL;
  }
  struct iovec v = { .iov_base = data, .iov_len = length };
  ssize_t n;
  do n = preadv2(fd, &v, 1, (off_t)position, RWF_NOWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) n = -1;
  else if (n < 0) {
    int err = errno;
    const char *name = err == EBADF ? "EBADF" : err == EOPNOTSUPP ? "EOPNOTSUPP" : err == EIO ? "EIO" : "EINVAL";
    napi_throw_error(env, name, strerror(err));
    return NULL;
  }
  napi_value out;
  napi_create_double(env, (double)n, &out);
  return out;
}

void register_read_cached(napi_env env, napi_value exports) {
  export_function(env, exports, "readCached", read_cached);
}
