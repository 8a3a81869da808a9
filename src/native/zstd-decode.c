/*
 * zstd decompression into memory the caller owns, on the calling thread (part of rebound's native
 * addon, see addon.c; the chunk workers load it by path). The chunk workers decode restore-point
 * chunks with it (src/repo/chunk-worker.ts): straight into a migration's shared buffer or the
 * buffer that is moved to the event loop, with no allocation and no thread-pool round trip per
 * chunk. The npm binding (@mongodb-js/zstd) only returns new memory from libuv's pool, which
 * cost page faults, a copy and a context switch per chunk. libzstd is Debian's (libzstd-dev).
 *
 *   zstdDecompressInto(src, dst) -> bytes written into dst
 *
 * src and dst are any typed arrays (a SharedArrayBuffer's views too). All of dst may be written,
 * not only the bytes decoded (libzstd keeps literals in the destination's spare room): callers pass
 * exactly the space the chunk fills. One decompression context
 * per thread, freed with its Node environment (a worker's exit). A frame that does not decode, or
 * that does not fit in dst, throws an Error with code ECORRUPT and zstd's reason.
 */
#include <zstd.h>
#include "addon.h"

static _Thread_local ZSTD_DCtx *thread_dctx;

static void free_dctx(void *arg) {
  ZSTD_freeDCtx((ZSTD_DCtx *)arg);
  if (thread_dctx == arg) thread_dctx = NULL;
}

static int bytes_of(napi_env env, napi_value v, void **data, size_t *length) {
  napi_typedarray_type type;
  size_t count;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, &count, data, &ab, &offset) != napi_ok) return 0;
  size_t unit = (type == napi_int16_array || type == napi_uint16_array) ? 2
      : (type == napi_int32_array || type == napi_uint32_array || type == napi_float32_array) ? 4
      : (type == napi_float64_array || type == napi_bigint64_array || type == napi_biguint64_array) ? 8 : 1;
  *length = count * unit;
  return 1;
}

static napi_value zstd_decompress_into(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *src, *dst;
  size_t src_len, dst_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      !bytes_of(env, argv[0], &src, &src_len) || !bytes_of(env, argv[1], &dst, &dst_len)) {
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
  size_t n = ZSTD_decompressDCtx(thread_dctx, dst, dst_len, src, src_len);
  if (ZSTD_isError(n)) {
    napi_throw_error(env, "ECORRUPT", ZSTD_getErrorName(n));
    return NULL;
  }
  napi_value out;
  napi_create_double(env, (double)n, &out);
  return out;
}

void register_zstd_decode(napi_env env, napi_value exports) {
  export_function(env, exports, "zstdDecompressInto", zstd_decompress_into);
}
