/*
 * Sends file bytes to a socket without copying them through the process (part of rebound's
 * native addon, see addon.c; src/native/send-file.ts loads it).
 *
 *   sendFileSpanNow(socketFd, header, fileFd, position, length) -> sent, or -errno
 *     The same, at once on the calling thread, without waiting: it stops when the socket is full and
 *     returns how many bytes went out, or minus the errno of a failure. For the caller to use while
 *     the page cache serves the file (it times the call like its other synchronous reads,
 *     util/file-io.ts).
 *
 *   sendFileSpan(socketFd, header, fileFd, position, length, stallMs, callback)
 *     On libuv's thread pool: sends `header` (a Buffer, at most 64 bytes), then `length` bytes of
 *     the file from `position` with sendfile(2) (on a Unix socket the kernel passes page-cache pages
 *     to the reader, on TCP it copies once; a read()+write() pair copies twice, in the process's
 *     time). callback(errno, sent): `sent` counts header and file bytes that reached the socket;
 *     errno is 0 or an errno number; ENODATA when the file ended before `length` bytes.
 *
 * The socket is non-blocking (libuv's). When it is full the job waits for room with poll(2), for at
 * most `stallMs` at a time: a reader that takes no bytes for that long ends the job early (errno 0,
 * sent < total) and the caller sends the rest as it would without this path. So a client that stops
 * reading holds a pool thread for stallMs, not forever.
 *
 * Both descriptors are dup(2)ed before the job leaves the JS thread and closed when it ends: if the
 * connection or the file is closed meanwhile, the numbers may be reused by an unrelated open, but
 * the job still writes to the socket and reads the file it was given.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>
#include "addon.h"

#define MAX_HEADER 64
/* sendfile(2) moves at most 0x7ffff000 bytes per call; rebound's requests are far below. */
#define MAX_CALL 0x7ffff000L

typedef struct {
  int sock, file;
  off_t position;
  size_t length;
  unsigned char header[MAX_HEADER];
  size_t header_length;
  int stall_ms;
  size_t sent;
  int err;
  napi_ref callback;
  napi_async_work work;
} SendJob;

/* 1 when the socket has room (or an error the next send reports), 0 when none came within ms. */
static int wait_for_room(int fd, int ms) {
  struct pollfd p = { .fd = fd, .events = POLLOUT, .revents = 0 };
  for (;;) {
    int r = poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    return r != 0;
  }
}

/* Sends what is left of j's header and span; waits up to j->stall_ms for room when the socket is full (0: not at all). */
static void send_span(SendJob *j) {
  size_t total = j->header_length + j->length;
  while (j->sent < total) {
    ssize_t n;
    if (j->sent < j->header_length) {
      n = send(j->sock, j->header + j->sent, j->header_length - j->sent, MSG_NOSIGNAL | MSG_DONTWAIT | (j->length ? MSG_MORE : 0));
    } else {
      off_t at = j->position + (off_t)(j->sent - j->header_length);
      size_t want = total - j->sent;
      n = sendfile(j->sock, j->file, &at, want > (size_t)MAX_CALL ? (size_t)MAX_CALL : want);
      if (n == 0) {
        j->err = ENODATA; /* the file is shorter than it was */
        return;
      }
    }
    if (n > 0) {
      j->sent += (size_t)n;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (j->stall_ms == 0 || !wait_for_room(j->sock, j->stall_ms)) return; /* the caller sends the rest */
    } else {
      j->err = errno;
      return;
    }
  }
}

static void run_job(napi_env env, void *data) {
  (void)env;
  send_span(data);
}

static void finish_job(napi_env env, napi_status status, void *data) {
  SendJob *j = data;
  close(j->sock);
  close(j->file);
  napi_value cb, args[2], global;
  napi_get_reference_value(env, j->callback, &cb);
  napi_create_int32(env, status == napi_ok ? j->err : ECANCELED, &args[0]);
  napi_create_double(env, (double)j->sent, &args[1]);
  napi_get_global(env, &global);
  napi_delete_reference(env, j->callback);
  napi_delete_async_work(env, j->work);
  free(j);
  napi_call_function(env, global, cb, 2, args, NULL);
}

/* Reads (socketFd, header, fileFd, position, length) into j; throws and returns 0 when they are not that. */
static int span_args(napi_env env, napi_value *argv, SendJob *j) {
  int32_t sock, file;
  double position, length;
  void *header;
  size_t header_length;
  if (napi_get_value_int32(env, argv[0], &sock) != napi_ok || !typed_array_bytes(env, argv[1], &header, &header_length) ||
      napi_get_value_int32(env, argv[2], &file) != napi_ok || napi_get_value_double(env, argv[3], &position) != napi_ok ||
      napi_get_value_double(env, argv[4], &length) != napi_ok || sock < 0 || file < 0 || header_length > MAX_HEADER ||
      position < 0 || length < 0) {
    napi_throw_type_error(env, "EINVAL", "expected (socketFd, header <= 64 bytes, fileFd, position, length, ...)");
    return 0;
  }
  j->sock = sock;
  j->file = file;
  memcpy(j->header, header, header_length);
  j->header_length = header_length;
  j->position = (off_t)position;
  j->length = (size_t)length;
  return 1;
}

static napi_value send_file_span_now(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  SendJob j;
  memset(&j, 0, sizeof j);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) {
    napi_throw_type_error(env, "EINVAL", "expected (socketFd, header, fileFd, position, length)");
    return NULL;
  }
  if (!span_args(env, argv, &j)) return NULL;
  send_span(&j);
  napi_value out;
  napi_create_double(env, j.err ? -(double)j.err : (double)j.sent, &out);
  return out;
}

static napi_value send_file_span(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  int32_t stall;
  napi_valuetype cb_type = napi_undefined;
  SendJob *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 7 ||
      napi_get_value_int32(env, argv[5], &stall) != napi_ok || stall <= 0 ||
      napi_typeof(env, argv[6], &cb_type) != napi_ok || cb_type != napi_function) {
    free(j);
    napi_throw_type_error(env, "EINVAL", "expected (socketFd, header, fileFd, position, length, stallMs > 0, callback)");
    return NULL;
  }
  if (!span_args(env, argv, j)) {
    free(j);
    return NULL;
  }
  int sock = j->sock, file = j->file;
  j->sock = dup(sock);
  j->file = j->sock < 0 ? -1 : dup(file);
  if (j->file < 0) {
    int err = errno;
    if (j->sock >= 0) close(j->sock);
    free(j);
    napi_throw_error(env, err == EBADF ? "EBADF" : "EMFILE", strerror(err));
    return NULL;
  }
  j->stall_ms = stall;
  napi_value name;
  napi_create_string_utf8(env, "rebound:sendFileSpan", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[6], 1, &j->callback);
  napi_create_async_work(env, NULL, name, run_job, finish_job, j, &j->work);
  napi_queue_async_work(env, j->work);
  return NULL;
}

void register_send_file(napi_env env, napi_value exports) {
  export_function(env, exports, "sendFileSpan", send_file_span);
  export_function(env, exports, "sendFileSpanNow", send_file_span_now);
}
