/* Shared by the addon's parts (see addon.c). */
#ifndef REBOUND_ADDON_H
#define REBOUND_ADDON_H
#include <node_api.h>

/* exports[name] = fn */
void export_function(napi_env env, napi_value exports, const char *name, napi_callback fn);

void register_seek(napi_env env, napi_value exports);
void register_tls_record(napi_env env, napi_value exports);
void register_socket_buffer(napi_env env, napi_value exports);
void register_zstd(napi_env env, napi_value exports);
#endif
