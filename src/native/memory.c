/*
 * Gives memory that malloc holds free back to the kernel (part of rebound's native addon, see
 * addon.c; src/util/memory-trim.ts calls it).
 *
 *   mallocTrim() -> whether glibc released any memory (malloc_trim(0))
 *
 * glibc keeps freed memory in its arenas for reuse; after a burst (many large READ buffers, TLS
 * records, a fuzzer's odd sizes) a long-lived daemon's resident size stays at its peak although the
 * memory is free. malloc_trim walks every arena and returns free pages with madvise(MADV_DONTNEED).
 */
#include <malloc.h>
#include "addon.h"

static napi_value malloc_trim_now(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_get_boolean(env, malloc_trim(0) != 0, &out);
  return out;
}

void register_memory(napi_env env, napi_value exports) {
  export_function(env, exports, "mallocTrim", malloc_trim_now);
}
