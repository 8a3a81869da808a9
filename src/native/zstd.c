/*
 * zstd into memory the caller owns, on the calling thread (part of rebound's native addon, see
 * addon.c; the chunk workers load it by path, src/repo/chunk-worker.ts). The workers decode
 * restore-point chunks straight into a migration's shared buffer or the buffer that is moved to
 * the event loop, and compress a backup's chunks into a reused buffer, with no allocation and no
 * thread-pool round trip per chunk. The npm binding (@mongodb-js/zstd) only returns new memory from
 * libuv's pool, which cost page faults, copies and a context switch per chunk. libzstd is Debian's
 * (libzstd-dev).
 *
 *   zstdDecompressInto(src, dst) -> bytes written into dst
 *   zstdCompressInto(src, dst, level) -> bytes written into dst (dst should hold
 *                                       zstdCompressBound(src.length) bytes)
 *   zstdCompressBound(n) -> the largest frame n bytes can compress to
 *
 * src and dst are any typed arrays (a SharedArrayBuffer's views too). All of dst may be written,
 * not only the bytes produced (libzstd keeps literals in the destination's spare room): callers pass
 * exactly the space the chunk fills when decoding. One context of each kind per thread, freed with
 * its Node environment (a worker's exit). A frame that does not decode, or output that does not fit
 * in dst, throws an Error with code ECORRUPT (decoding) or ENOSPC (encoding) and zstd's reason.
 */
#include <zstd.h>
#include "addon.h"

static _Thread_local ZSTD_DCtx *thread_dctx;
static _Thread_local ZSTD_CCtx *thread_cctx;

static void free_dctx(void *arg) {
  ZSTD_freeDCtx((ZSTD_DCtx *)arg);
  if (thread_dctx == arg) thread_dctx = NULL;
}

static void free_cctx(void *arg) {
  ZSTD_freeCCtx((ZSTD_CCtx *)arg);
  if (thread_cctx == arg) thread_cctx = NULL;
}

/* A zstd call's answer: the bytes it wrote, or an Error with `code` and zstd's reason. */
static napi_value zstd_result(napi_env env, size_t n, const char *code) {
  if (ZSTD_isError(n)) {
    napi_throw_error(env, code, ZSTD_getErrorName(n));
    return NULL;
  }
  napi_value out;
  napi_create_double(env, (double)n, &out);
  return out;
}

static napi_value zstd_decompress_into(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *src, *dst;
  size_t src_len, dst_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      !typed_array_bytes(env, argv[0], &src, &src_len) || !typed_array_bytes(env, argv[1], &dst, &dst_len)) {
    napi_throw_type_error(env, "EINVAL", "expected (src, dst): two typed arrays");
    return NULL;
  }
  if (!thread_dctx) {
    thread_dctx = ZSTD_createDCtx();
    if (!thread_dctx) {
      napi_throw_error(env, "ENOMEM", "cannot create a zstd decompression context");
      return NULL;
    }
    napi_add_env_cleanup_hook(env, free_dctx, thread_dctx);
  }
  return zstd_result(env, ZSTD_decompressDCtx(thread_dctx, dst, dst_len, src, src_len), "ECORRUPT");
}

static napi_value zstd_compress_into(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  void *src, *dst;
  size_t src_len, dst_len;
  int32_t level;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      !typed_array_bytes(env, argv[0], &src, &src_len) || !typed_array_bytes(env, argv[1], &dst, &dst_len) ||
      napi_get_value_int32(env, argv[2], &level) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "expected (src, dst, level): two typed arrays and a level");
    return NULL;
  }
  if (!thread_cctx) {
    thread_cctx = ZSTD_createCCtx();
    if (!thread_cctx) {
      napi_throw_error(env, "ENOMEM", "cannot create a zstd compression context");
      return NULL;
    }
    napi_add_env_cleanup_hook(env, free_cctx, thread_cctx);
  }
  return zstd_result(env, ZSTD_compressCCtx(thread_cctx, dst, dst_len, src, src_len, level), "ENOSPC");
}

static napi_value zstd_compress_bound(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &n) != napi_ok || !(n >= 0) || n > 4294967295.0) {
    napi_throw_type_error(env, "EINVAL", "expected (n): a length");
    return NULL;
  }
  napi_value out;
  napi_create_double(env, (double)ZSTD_compressBound((size_t)n), &out);
  return out;
}

void register_zstd(napi_env env, napi_value exports) {
  export_function(env, exports, "zstdDecompressInto", zstd_decompress_into);
  export_function(env, exports, "zstdCompressInto", zstd_compress_into);
  export_function(env, exports, "zstdCompressBound", zstd_compress_bound);
}
