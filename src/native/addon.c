/*
 * rebound's native addon: what Node does not offer, in small C files with one job each.
 *   seek.c        lseek(2) SEEK_DATA / SEEK_HOLE (src/native/seek.ts)
 *   tls-record.c  TLS 1.3 record protection with OpenSSL's AEADs (src/native/tls-record.ts)
 *   socket-buffer.c  a connected socket's send buffer size (src/native/socket-buffer.ts)
 *   zstd.c        zstd into the caller's memory, both ways (libzstd; src/repo/chunk-worker.ts)
 *   crc32.c       CRC-32 with carry-less multiplication (libdeflate; src/repo/chunk-worker.ts)
 *   send-file.c   file bytes to a socket with sendfile(2), on the thread pool (src/native/send-file.ts)
 *   read-cached.c preadv2(RWF_NOWAIT): what the page cache holds, never waiting (src/util/file-io.ts)
 *   memory.c      malloc_trim(3): free heap memory back to the kernel (src/util/memory-trim.ts)
 * Built by tools/build-native.sh with node-gyp against the installed Node's headers (no download).
 * N-API only, so it loads in any Node >= 20 and in worker threads. OpenSSL comes from the Node
 * binary itself (Node exports its libcrypto symbols for addons); libzstd and libdeflate are Debian's
 * libzstd-dev and libdeflate-dev.
 */
#include "addon.h"

void export_function(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);
  napi_set_named_property(env, exports, name, f);
}

int typed_array_bytes(napi_env env, napi_value v, void **data, size_t *length) {
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

NAPI_MODULE_INIT() {
  register_seek(env, exports);
  register_tls_record(env, exports);
  register_socket_buffer(env, exports);
  register_zstd(env, exports);
  register_crc32(env, exports);
  register_send_file(env, exports);
  register_memory(env, exports);
  register_read_cached(env, exports);
  return exports;
}
