/*
 * lseek(2) with SEEK_DATA / SEEK_HOLE, which Node does not offer (part of rebound's native addon,
 * see addon.c; src/native/seek.ts loads it).
 *
 *   seekData(fd, offset) -> the first offset >= `offset` holding data, or -1 when there is none
 *                           before the end of the file (ENXIO)
 *   seekHole(fd, offset) -> the first offset >= `offset` in a hole (the end of the file counts as
 *                           one), or -1 when `offset` is at or past the end (ENXIO)
 *   any other failure throws an Error whose `code` is the errno name (EINVAL: the filesystem or
 *   file type has no SEEK_DATA; the caller then reports everything as data).
 *
 * lseek moves the descriptor's file position; rebound does positional I/O only (pread/pwrite),
 * so the position is never used.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "addon.h"

static napi_value fail(napi_env env, int err) {
  const char *name = err == EINVAL ? "EINVAL" : err == EBADF ? "EBADF" : err == EOVERFLOW ? "EOVERFLOW" : "EIO";
  napi_throw_error(env, name, strerror(err));
  return NULL;
}

static napi_value do_seek(napi_env env, napi_callback_info info, int whence) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, "EINVAL", "expected (fd, offset)");
    return NULL;
  }
  int32_t fd;
  int64_t offset;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &offset) != napi_ok || fd < 0 || offset < 0) {
    napi_throw_type_error(env, "EINVAL", "fd and offset must be non-negative numbers");
    return NULL;
  }
  off_t r = lseek(fd, (off_t)offset, whence);
  if (r < 0) {
    if (errno == ENXIO) r = -1;
    else return fail(env, errno);
  }
  napi_value out;
  napi_create_int64(env, (int64_t)r, &out);
  return out;
}

static napi_value seek_data(napi_env env, napi_callback_info info) { return do_seek(env, info, SEEK_DATA); }
static napi_value seek_hole(napi_env env, napi_callback_info info) { return do_seek(env, info, SEEK_HOLE); }

void register_seek(napi_env env, napi_value exports) {
  export_function(env, exports, "seekData", seek_data);
  export_function(env, exports, "seekHole", seek_hole);
}
