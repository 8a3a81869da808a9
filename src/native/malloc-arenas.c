/*
 * glibc's limit on malloc arenas (M_ARENA_MAX), which a process otherwise gets only from the
 * MALLOC_ARENA_MAX variable at its start (part of rebound's native addon, see addon.c;
 * src/native/malloc-arenas.ts loads it).
 *
 *   setMallocArenaMax(n) -> true when the C library took the limit, false when it has no such
 *                           setting (not glibc) or refused it
 */
#include <malloc.h>
#include "addon.h"

static napi_value set_malloc_arena_max(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &n) != napi_ok || n < 1) {
    napi_throw_type_error(env, "EINVAL", "expected a number of arenas >= 1");
    return NULL;
  }
  int ok = 0;
#ifdef M_ARENA_MAX
  ok = mallopt(M_ARENA_MAX, n) == 1;
#endif
  napi_value out;
  napi_get_boolean(env, ok, &out);
  return out;
}

void register_malloc_arenas(napi_env env, napi_value exports) {
  export_function(env, exports, "setMallocArenaMax", set_malloc_arena_max);
}
