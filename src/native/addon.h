/* Shared by the addon's parts (see addon.c). */
#ifndef REBOUND_ADDON_H
#define REBOUND_ADDON_H
#include <node_api.h>

/* exports[name] = fn */
void export_function(napi_env env, napi_value exports, const char *name, napi_callback fn);

/* The bytes of any typed array (a SharedArrayBuffer's views too): 0 when v is not one. */
int typed_array_bytes(napi_env env, napi_value v, void **data, size_t *length);

void register_seek(napi_env env, napi_value exports);
void register_tls_record(napi_env env, napi_value exports);
void register_socket_buffer(napi_env env, napi_value exports);
void register_zstd(napi_env env, napi_value exports);
void register_crc32(napi_env env, napi_value exports);
void register_send_file(napi_env env, napi_value exports);
void register_memory(napi_env env, napi_value exports);
void register_read_cached(napi_env env, napi_value exports);
#endif
