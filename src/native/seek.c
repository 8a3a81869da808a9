/*
 * rebound's native addon: lseek(2) with SEEK_DATA / SEEK_HOLE, which Node does not offer
 * (src/native/seek.ts loads it; built by tools/build-native.sh with node-gyp against the
 * installed Node's headers, no download). N-API only, so it loads in any Node >= 20 and in
 * worker threads.
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
#include <node_api.h>

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

NAPI_MODULE_INIT() {
  napi_value f;
  napi_create_function(env, "seekData", NAPI_AUTO_LENGTH, seek_data, NULL, &f);
  napi_set_named_property(env, exports, "seekData", f);
  napi_create_function(env, "seekHole", NAPI_AUTO_LENGTH, seek_hole, NULL, &f);
  napi_set_named_property(env, exports, "seekHole", f);
  return exports;
}
