/*
 * TLS 1.3 record protection (RFC 8446 §5.2) with OpenSSL's AEADs, for src/tls/record-stream.ts:
 * once a TLS 1.3 handshake is done, rebound seals and opens the connection's records itself, a
 * whole batch of replies per call, instead of handing every write to Node's TLS socket (which
 * copies it, splits it and encrypts it record by record through its BIOs).
 *
 *   tlsCipher(cipher, key, encrypt) -> a cipher context for one direction (freed by the GC); the
 *       key schedule is done once here, each record then only sets its nonce.
 *   tlsSeal(ctx, iv, seq, type, chunks, out) -> records written
 *       The plaintext (the chunks, one after the other) becomes records of at most 16384 bytes,
 *       each `header | AEAD(plaintext | type) | tag`, written to `out` back to back with sequence
 *       numbers seq, seq+1, ... `out` must hold total + records * 22 bytes.
 *   tlsSealAsync(ctx, iv, seq, type, chunks, out, callback(err, records))
 *       The same on libuv's thread pool (for large batches: the event loop goes on meanwhile). The
 *       chunks and `out` must not change until the callback.
 *   tlsSealFile(ctx, iv, seq, type, header, fd, position, length, out) -> records
 *   tlsSealFileAsync(ctx, iv, seq, type, header, fd, position, length, out, callback(err, records))
 *       Like tlsSealAsync with the plaintext `header` followed by `length` bytes of the file `fd`
 *       from `position`: each record's plaintext is read (pread) into a record-sized buffer that
 *       stays in the CPU's cache and sealed from there, so file data is not first copied into a
 *       reply buffer and read back. err.code is ENODATA when the file ended early.
 *   tlsOpen(ctx, iv, seq, record, out, outOffset) -> inner length, or -1
 *       `record` is one whole record (5-byte header, ciphertext, 16-byte tag). The inner plaintext
 *       (content, content type, zero padding) goes to out[outOffset...]; -1 when the tag does not
 *       match (wrong key, wrong sequence number or a tampered record): nothing in `out` may be used.
 *
 * cipher: 1 AES-128-GCM, 2 AES-256-GCM, 3 ChaCha20-Poly1305 (the TLS 1.3 suites). key and iv are
 * the traffic key and the 12-byte write IV; the nonce is iv XOR the 64-bit sequence number. A
 * context made for sealing cannot open and the other way round.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "addon.h"
#include <openssl/evp.h>

#define RECORD_MAX 16384
#define HEADER 5
#define TAG 16
#define IV_LEN 12

static const EVP_CIPHER *cipher_of(int32_t id, size_t key_len) {
  switch (id) {
    case 1: return key_len == 16 ? EVP_aes_128_gcm() : NULL;
    case 2: return key_len == 32 ? EVP_aes_256_gcm() : NULL;
    case 3: return key_len == 32 ? EVP_chacha20_poly1305() : NULL;
    default: return NULL;
  }
}

static void nonce_of(const uint8_t *iv, uint64_t seq, uint8_t *nonce) {
  memcpy(nonce, iv, IV_LEN);
  for (int i = 0; i < 8; i++) nonce[IV_LEN - 1 - i] ^= (uint8_t)(seq >> (8 * i));
}

static void header_of(uint8_t *h, size_t body) {
  h[0] = 23; /* opaque_type: application_data */
  h[1] = 3;
  h[2] = 3; /* legacy_record_version 0x0303 */
  h[3] = (uint8_t)(body >> 8);
  h[4] = (uint8_t)body;
}

static napi_value number(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

static napi_value type_error(napi_env env, const char *msg) {
  napi_throw_type_error(env, "EINVAL", msg);
  return NULL;
}

static int get_buffer(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return 0;
  return napi_get_buffer_info(env, v, (void **)data, len) == napi_ok;
}

/*
 * `tmpl` holds the key schedule and is never used to encrypt: the main thread's calls use `ctx`,
 * a copy, and each job on the thread pool makes its own copy, so that they can run at once.
 */
struct cipher_ctx {
  EVP_CIPHER_CTX *tmpl;
  EVP_CIPHER_CTX *ctx;
  int encrypt;
};

static void free_ctx(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct cipher_ctx *c = data;
  EVP_CIPHER_CTX_free(c->tmpl);
  EVP_CIPHER_CTX_free(c->ctx);
  free(c);
}

static napi_value tls_cipher(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t id;
  uint8_t *key;
  size_t key_len;
  bool encrypt;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 || napi_get_value_int32(env, argv[0], &id) != napi_ok ||
      !get_buffer(env, argv[1], &key, &key_len) || napi_get_value_bool(env, argv[2], &encrypt) != napi_ok)
    return type_error(env, "expected (cipher, key, encrypt)");
  const EVP_CIPHER *cipher = cipher_of(id, key_len);
  if (!cipher) return type_error(env, "unknown cipher or wrong key length");
  struct cipher_ctx *c = malloc(sizeof *c);
  if (!c) return type_error(env, "out of memory");
  c->encrypt = encrypt;
  c->tmpl = EVP_CIPHER_CTX_new();
  c->ctx = EVP_CIPHER_CTX_new();
  if (!c->tmpl || !c->ctx || EVP_CipherInit_ex(c->tmpl, cipher, NULL, key, NULL, encrypt ? 1 : 0) != 1 || EVP_CIPHER_CTX_copy(c->ctx, c->tmpl) != 1) {
    free_ctx(env, c, NULL);
    napi_throw_error(env, "EIO", "cannot set up the cipher");
    return NULL;
  }
  napi_value out;
  if (napi_create_external(env, c, free_ctx, NULL, &out) != napi_ok) {
    free_ctx(env, c, NULL);
    return type_error(env, "cannot wrap the cipher");
  }
  return out;
}

/* ctx, iv, seq: the first three arguments of tlsSeal and tlsOpen. */
struct keys {
  struct cipher_ctx *c;
  EVP_CIPHER_CTX *ctx;
  uint8_t *iv;
  uint64_t seq;
};

static int get_keys(napi_env env, napi_value *argv, struct keys *k, int encrypt) {
  napi_valuetype t;
  struct cipher_ctx *c;
  size_t iv_len;
  bool lossless;
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_external || napi_get_value_external(env, argv[0], (void **)&c) != napi_ok || c->encrypt != encrypt)
    return 0;
  k->c = c;
  k->ctx = c->ctx;
  if (!get_buffer(env, argv[1], &k->iv, &iv_len) || iv_len != IV_LEN) return 0;
  return napi_get_value_bigint_uint64(env, argv[2], &k->seq, &lossless) == napi_ok && lossless;
}

/* A run of plaintext bytes (one chunk). */
struct piece {
  const uint8_t *data;
  size_t len;
};

/* Seals `total` bytes of pieces as records from `seq` into `out`; 1 when done, 0 on failure. No N-API here: it runs on the thread pool too. */
static int seal_records(EVP_CIPHER_CTX *ctx, const uint8_t *iv, uint64_t seq, uint8_t type, const struct piece *pieces, size_t total,
                        size_t records, uint8_t *out) {
  size_t pi = 0, ppos = 0; /* the current piece and how much of it is sealed */
  uint8_t *w = out;
  int ok = 1;
  for (size_t r = 0; r < records && ok; r++) {
    size_t len = total - r * RECORD_MAX;
    if (len > RECORD_MAX) len = RECORD_MAX;
    uint8_t nonce[IV_LEN];
    nonce_of(iv, seq + r, nonce);
    header_of(w, len + 1 + TAG);
    int n;
    ok = EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) == 1 && EVP_EncryptUpdate(ctx, NULL, &n, w, HEADER) == 1;
    uint8_t *body = w + HEADER;
    size_t done = 0;
    while (ok && done < len) {
      while (ppos == pieces[pi].len) {
        pi++;
        ppos = 0;
      }
      size_t take = pieces[pi].len - ppos < len - done ? pieces[pi].len - ppos : len - done;
      ok = EVP_EncryptUpdate(ctx, body + done, &n, pieces[pi].data + ppos, (int)take) == 1 && (size_t)n == take;
      ppos += take;
      done += take;
    }
    ok = ok && EVP_EncryptUpdate(ctx, body + len, &n, &type, 1) == 1 && n == 1 && EVP_EncryptFinal_ex(ctx, body + len + 1, &n) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG, body + len + 1) == 1;
    w = body + len + 1 + TAG;
  }
  return ok;
}

/* The arguments of tlsSeal and tlsSealAsync after ctx, iv, seq: type, chunks, out. */
struct seal_args {
  struct keys k;
  uint8_t type;
  struct piece *pieces; /* malloc'ed */
  size_t total, records;
  uint8_t *out;
};

static int get_seal_args(napi_env env, napi_value *argv, struct seal_args *a) {
  int32_t type;
  uint32_t nchunks;
  size_t out_len;
  bool is_array;
  a->pieces = NULL;
  if (!get_keys(env, argv, &a->k, 1) || napi_get_value_int32(env, argv[3], &type) != napi_ok || type < 0 || type > 255 ||
      napi_is_array(env, argv[4], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[4], &nchunks) != napi_ok ||
      !get_buffer(env, argv[5], &a->out, &out_len))
    return 0;
  a->type = (uint8_t)type;
  a->pieces = malloc((nchunks + 1) * sizeof *a->pieces);
  if (!a->pieces) return 0;
  a->total = 0;
  for (uint32_t i = 0; i < nchunks; i++) {
    napi_value c;
    uint8_t *d;
    if (napi_get_element(env, argv[4], i, &c) != napi_ok || !get_buffer(env, c, &d, &a->pieces[i].len)) return 0;
    a->pieces[i].data = d;
    a->total += a->pieces[i].len;
  }
  a->pieces[nchunks].data = NULL;
  a->pieces[nchunks].len = 0;
  a->records = a->total == 0 ? 1 : (a->total + RECORD_MAX - 1) / RECORD_MAX;
  return out_len >= a->total + a->records * (HEADER + 1 + TAG);
}

static napi_value tls_seal(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  struct seal_args a;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6 || !get_seal_args(env, argv, &a)) {
    free(a.pieces);
    return type_error(env, "expected (sealing ctx, iv, seq, type, chunks, out) with out large enough");
  }
  int ok = seal_records(a.k.ctx, a.k.iv, a.k.seq, a.type, a.pieces, a.total, a.records, a.out);
  free(a.pieces);
  if (!ok) {
    napi_throw_error(env, "EIO", "sealing a TLS record failed");
    return NULL;
  }
  return number(env, (int64_t)a.records);
}

/* tlsSealAsync: the same on the thread pool; the JS values it reads stay referenced until it ends. */
struct seal_job {
  struct seal_args a;
  uint8_t iv[IV_LEN];
  napi_ref keep[4]; /* ctx, chunks, out, callback */
  napi_async_work work;
  int ok;
};

static void seal_execute(napi_env env, void *data) {
  (void)env;
  struct seal_job *j = data;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  j->ok = ctx != NULL && EVP_CIPHER_CTX_copy(ctx, j->a.k.c->tmpl) == 1 &&
          seal_records(ctx, j->iv, j->a.k.seq, j->a.type, j->a.pieces, j->a.total, j->a.records, j->a.out);
  EVP_CIPHER_CTX_free(ctx);
}

static void seal_complete(napi_env env, napi_status status, void *data) {
  struct seal_job *j = data;
  napi_value cb, global, argv[2];
  napi_get_reference_value(env, j->keep[3], &cb);
  napi_get_global(env, &global);
  if (status != napi_ok || !j->ok) {
    napi_value msg;
    napi_create_string_utf8(env, "sealing a TLS record failed", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &argv[0]);
    napi_get_undefined(env, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    argv[1] = number(env, (int64_t)j->a.records);
  }
  for (int i = 0; i < 4; i++) napi_delete_reference(env, j->keep[i]);
  napi_delete_async_work(env, j->work);
  free(j->a.pieces);
  free(j);
  napi_call_function(env, global, cb, 2, argv, NULL);
}

static napi_value tls_seal_async(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7], name;
  napi_valuetype t;
  struct seal_job *j = calloc(1, sizeof *j);
  if (!j) return type_error(env, "out of memory");
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 7 || !get_seal_args(env, argv, &j->a) ||
      napi_typeof(env, argv[6], &t) != napi_ok || t != napi_function) {
    free(j->a.pieces);
    free(j);
    return type_error(env, "expected (sealing ctx, iv, seq, type, chunks, out, callback) with out large enough");
  }
  memcpy(j->iv, j->a.k.iv, IV_LEN);
  const int kept[4] = {0, 4, 5, 6};
  for (int i = 0; i < 4; i++) napi_create_reference(env, argv[kept[i]], 1, &j->keep[i]);
  napi_create_string_utf8(env, "rebound:tlsSeal", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, seal_execute, seal_complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return NULL;
}

/* tlsSealFileAsync: header + file bytes, read record by record on the thread pool. */
struct seal_file_job {
  struct keys k;
  uint8_t iv[IV_LEN];
  uint8_t type;
  uint8_t header[64];
  size_t header_len;
  int fd;
  off_t position;
  size_t length, records;
  uint8_t *out;
  napi_ref keep[3]; /* ctx, out, callback */
  napi_async_work work;
  int err; /* 0, ENODATA (the file ended early), EIO (sealing failed) or a pread errno */
};

/* Reads and seals j's records with ctx; sets j->err on failure. No N-API: it runs on the thread pool too. */
static void seal_file(EVP_CIPHER_CTX *ctx, struct seal_file_job *j) {
  uint8_t plain[RECORD_MAX];
  size_t total = j->header_len + j->length;
  uint8_t *w = j->out;
  for (size_t r = 0; r < j->records && !j->err; r++) {
    size_t at = r * RECORD_MAX, len = total - at < RECORD_MAX ? total - at : RECORD_MAX, got = 0;
    if (at < j->header_len) {
      got = j->header_len - at < len ? j->header_len - at : len;
      memcpy(plain, j->header + at, got);
    }
    while (got < len) {
      ssize_t n = pread(j->fd, plain + got, len - got, j->position + (off_t)(at + got - j->header_len));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        j->err = n == 0 ? ENODATA : errno;
        break;
      }
      got += (size_t)n;
    }
    if (j->err) break;
    struct piece p[2] = {{plain, len}, {NULL, 0}};
    if (!seal_records(ctx, j->iv, j->k.seq + r, j->type, p, len, 1, w)) j->err = EIO;
    w += HEADER + len + 1 + TAG;
  }
}

static void seal_file_execute(napi_env env, void *data) {
  (void)env;
  struct seal_file_job *j = data;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx || EVP_CIPHER_CTX_copy(ctx, j->k.c->tmpl) != 1) j->err = EIO;
  else seal_file(ctx, j);
  EVP_CIPHER_CTX_free(ctx);
}

static napi_value seal_file_error(napi_env env, int err) {
  napi_value msg, code, e;
  napi_create_string_utf8(env, err == ENODATA ? "the file ended before the requested range" : err == EIO ? "sealing a TLS record failed" : strerror(err), NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, err == ENODATA ? "ENODATA" : "EIO", NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &e);
  return e;
}

static void seal_file_complete(napi_env env, napi_status status, void *data) {
  struct seal_file_job *j = data;
  napi_value cb, global, argv[2];
  napi_get_reference_value(env, j->keep[2], &cb);
  napi_get_global(env, &global);
  int err = status != napi_ok ? EIO : j->err;
  if (err) {
    argv[0] = seal_file_error(env, err);
    napi_get_undefined(env, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    argv[1] = number(env, (int64_t)j->records);
  }
  for (int i = 0; i < 3; i++) napi_delete_reference(env, j->keep[i]);
  napi_delete_async_work(env, j->work);
  free(j);
  napi_call_function(env, global, cb, 2, argv, NULL);
}

/* Reads tlsSealFile's arguments (ctx, iv, seq, type, header, fd, position, length, out) into j; 0 when they are not that. */
static int get_seal_file_args(napi_env env, napi_value *argv, struct seal_file_job *j) {
  int32_t type, fd;
  double position, length;
  uint8_t *header;
  size_t header_len, out_len;
  if (!get_keys(env, argv, &j->k, 1) || napi_get_value_int32(env, argv[3], &type) != napi_ok || type < 0 || type > 255 ||
      !get_buffer(env, argv[4], &header, &header_len) || header_len > sizeof j->header || napi_get_value_int32(env, argv[5], &fd) != napi_ok ||
      fd < 0 || napi_get_value_double(env, argv[6], &position) != napi_ok || position < 0 ||
      napi_get_value_double(env, argv[7], &length) != napi_ok || length < 0 || !get_buffer(env, argv[8], &j->out, &out_len))
    return 0;
  size_t total = header_len + (size_t)length;
  j->records = total == 0 ? 1 : (total + RECORD_MAX - 1) / RECORD_MAX;
  memcpy(j->iv, j->k.iv, IV_LEN);
  memcpy(j->header, header, header_len);
  j->header_len = header_len;
  j->type = (uint8_t)type;
  j->fd = fd;
  j->position = (off_t)position;
  j->length = (size_t)length;
  return out_len >= total + j->records * (HEADER + 1 + TAG);
}

static napi_value tls_seal_file(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  struct seal_file_job j;
  memset(&j, 0, sizeof j);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 9 || !get_seal_file_args(env, argv, &j))
    return type_error(env, "expected (sealing ctx, iv, seq, type, header <= 64 bytes, fd, position, length, out) with out large enough");
  seal_file(j.k.ctx, &j);
  if (j.err) {
    napi_throw(env, seal_file_error(env, j.err));
    return NULL;
  }
  return number(env, (int64_t)j.records);
}

static napi_value tls_seal_file_async(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10], name;
  napi_valuetype t;
  struct seal_file_job *j = calloc(1, sizeof *j);
  if (!j) return type_error(env, "out of memory");
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 10 || !get_seal_file_args(env, argv, j) ||
      napi_typeof(env, argv[9], &t) != napi_ok || t != napi_function) {
    free(j);
    return type_error(env, "expected (sealing ctx, iv, seq, type, header <= 64 bytes, fd, position, length, out, callback) with out large enough");
  }
  const int kept[3] = {0, 8, 9};
  for (int i = 0; i < 3; i++) napi_create_reference(env, argv[kept[i]], 1, &j->keep[i]);
  napi_create_string_utf8(env, "rebound:tlsSealFile", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, seal_file_execute, seal_file_complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return NULL;
}

static napi_value tls_open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  struct keys k;
  uint8_t *rec, *out;
  size_t rec_len, out_len;
  int64_t off;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6 || !get_keys(env, argv, &k, 0) ||
      !get_buffer(env, argv[3], &rec, &rec_len) || !get_buffer(env, argv[4], &out, &out_len) ||
      napi_get_value_int64(env, argv[5], &off) != napi_ok || off < 0)
    return type_error(env, "expected (opening ctx, iv, seq, record, out, outOffset)");
  if (rec_len < HEADER + 1 + TAG) return type_error(env, "record is too short");
  size_t clen = rec_len - HEADER - TAG;
  if ((size_t)off > out_len || out_len - (size_t)off < clen) return type_error(env, "out is too small");

  EVP_CIPHER_CTX *ctx = k.ctx;
  uint8_t nonce[IV_LEN];
  nonce_of(k.iv, k.seq, nonce);
  int n, ok = EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) == 1 && EVP_DecryptUpdate(ctx, NULL, &n, rec, HEADER) == 1 &&
              EVP_DecryptUpdate(ctx, out + off, &n, rec + HEADER, (int)clen) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG, rec + HEADER + clen) == 1;
  int authentic = ok && EVP_DecryptFinal_ex(ctx, out + off + n, &n) == 1;
  if (!ok) {
    napi_throw_error(env, "EIO", "opening a TLS record failed");
    return NULL;
  }
  return number(env, authentic ? (int64_t)clen : -1);
}

void register_tls_record(napi_env env, napi_value exports) {
  export_function(env, exports, "tlsCipher", tls_cipher);
  export_function(env, exports, "tlsSeal", tls_seal);
  export_function(env, exports, "tlsSealAsync", tls_seal_async);
  export_function(env, exports, "tlsSealFileAsync", tls_seal_file_async);
  export_function(env, exports, "tlsSealFile", tls_seal_file);
  export_function(env, exports, "tlsOpen", tls_open);
}
