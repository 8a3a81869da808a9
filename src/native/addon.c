/*
 * rebound's native addon: what Node does not offer, in small C files with one job each.
 *   seek.c        lseek(2) SEEK_DATA / SEEK_HOLE (src/native/seek.ts)
 *   tls-record.c  TLS 1.3 record protection with OpenSSL's AEADs (src/native/tls-record.ts)
 *   socket-buffer.c  a connected socket's send buffer size (src/native/socket-buffer.ts)
 *   zstd.c        zstd into the caller's memory, both ways (libzstd; src/repo/chunk-worker.ts)
 * Built by tools/build-native.sh with node-gyp against the installed Node's headers (no download).
 * N-API only, so it loads in any Node >= 20 and in worker threads. OpenSSL comes from the Node
 * binary itself (Node exports its libcrypto symbols for addons); libzstd is Debian's libzstd-dev.
 */
#include "addon.h"

void export_function(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);
  napi_set_named_property(env, exports, name, f);
}

NAPI_MODULE_INIT() {
  register_seek(env, exports);
  register_tls_record(env, exports);
  register_socket_buffer(env, exports);
  register_zstd(env, exports);
  return exports;
}
