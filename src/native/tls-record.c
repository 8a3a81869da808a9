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
 *   tlsSealSend(ctx, iv, seq, type, chunks, out, fd) -> bytes sent, or -errno
 *       tlsSeal, then as much of the records as the socket `fd` takes at once (never waits): one
 *       call seals and sends a batch of replies, without Node's stream and write request.
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
 *   tlsOpenRecords(ctx, iv, seq, data, from, end, out, outOffset, result) -> records opened
 *       Opens the whole records in data[from, end) one after the other (one call for all the
 *       records of a socket read), with sequence numbers seq, seq+1, ... The content of
 *       application-data records goes to out[outOffset...] back to back (the inner content type
 *       and padding dropped). It stops after the first record of another inner type, at one that
 *       does not authenticate, or at one without a content type. result (a Float64Array of 4):
 *       [0] 0 when all were opened, the inner type of the record it stopped after, -1 not
 *       authentic, -2 no content type; [1] where in `data` the records not opened start;
 *       [2] where in `out` the application data ends; [3] where the stopping record's content
 *       ends in `out` (it starts at [2]).
 *
 * cipher: 1 AES-128-GCM, 2 AES-256-GCM, 3 ChaCha20-Poly1305 (the TLS 1.3 suites). key and iv are
 * the traffic key and the 12-byte write IV; the nonce is iv XOR the 64-bit sequence number. A
 * context made for sealing cannot open and the other way round.
 *
 * AES-GCM runs on Intel's intel-ipsec-mb (the GCM code DPDK uses; it picks SSE, AVX2 or AVX-512
 * with VAES for the CPU at hand), ChaCha20-Poly1305 on OpenSSL's EVP (Node's own OpenSSL 3.0).
 * Measured on the development machine (AVX-512): a 16 KiB record in 1.1 us against 2.9 us, a
 * 29-byte one in 0.05 us against 0.22 us (OpenSSL 3.0 has no VAES code for GCM and spends most of
 * a small record in its provider layer). tlsAeadEngine() says which code runs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "addon.h"
#include <intel-ipsec-mb.h>
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

/* intel-ipsec-mb's function table for this CPU (its direct GCM calls only read it: shared by all threads), or NULL. */
static IMB_MGR *imb;
static IMB_ARCH imb_arch;

/*
 * AES-GCM: `gcm` holds the expanded key and hash keys (read-only once made: any thread may use it).
 * ChaCha20-Poly1305: `tmpl` holds the key schedule and is never used to encrypt: the main thread's
 * calls use `ctx`, a copy, and each job on the thread pool makes its own copy, so that they can
 * run at once.
 */
struct cipher_ctx {
  struct gcm_key_data *gcm;
  int gcm_bits; /* 128 or 256 */
  EVP_CIPHER_CTX *tmpl;
  EVP_CIPHER_CTX *ctx;
  int encrypt;
};

static void free_ctx(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct cipher_ctx *c = data;
  if (c->gcm) explicit_bzero(c->gcm, sizeof *c->gcm); /* key material, as OpenSSL cleanses its contexts */
  free(c->gcm);
  EVP_CIPHER_CTX_free(c->tmpl);
  EVP_CIPHER_CTX_free(c->ctx);
  free(c);
}

/*
 * One record's AEAD pass: begin (nonce and the record header as associated data), update (any
 * number of pieces), then seal_finish (writes the tag) or open_finish (checks it). `evp` is the
 * EVP context to use when the cipher is not AES-GCM (the caller's copy on the thread pool).
 */
struct aead {
  const struct cipher_ctx *c;
  EVP_CIPHER_CTX *evp;
  struct gcm_context_data gcm;
};

static int aead_begin(struct aead *a, const uint8_t *nonce, const uint8_t *header) {
  if (a->c->gcm) {
    if (a->c->gcm_bits == 128) IMB_AES128_GCM_INIT(imb, a->c->gcm, &a->gcm, nonce, header, HEADER);
    else IMB_AES256_GCM_INIT(imb, a->c->gcm, &a->gcm, nonce, header, HEADER);
    return 1;
  }
  int n;
  return EVP_CipherInit_ex(a->evp, NULL, NULL, NULL, nonce, -1) == 1 && EVP_CipherUpdate(a->evp, NULL, &n, header, HEADER) == 1;
}

static int aead_update(struct aead *a, uint8_t *out, const uint8_t *in, size_t len) {
  if (len == 0) return 1;
  if (a->c->gcm) {
    if (a->c->encrypt) {
      if (a->c->gcm_bits == 128) IMB_AES128_GCM_ENC_UPDATE(imb, a->c->gcm, &a->gcm, out, in, len);
      else IMB_AES256_GCM_ENC_UPDATE(imb, a->c->gcm, &a->gcm, out, in, len);
    } else {
      if (a->c->gcm_bits == 128) IMB_AES128_GCM_DEC_UPDATE(imb, a->c->gcm, &a->gcm, out, in, len);
      else IMB_AES256_GCM_DEC_UPDATE(imb, a->c->gcm, &a->gcm, out, in, len);
    }
    return 1;
  }
  int n;
  return EVP_CipherUpdate(a->evp, out, &n, in, (int)len) == 1 && (size_t)n == len;
}

static int aead_seal_finish(struct aead *a, uint8_t *tag) {
  if (a->c->gcm) {
    if (a->c->gcm_bits == 128) IMB_AES128_GCM_ENC_FINALIZE(imb, a->c->gcm, &a->gcm, tag, TAG);
    else IMB_AES256_GCM_ENC_FINALIZE(imb, a->c->gcm, &a->gcm, tag, TAG);
    return 1;
  }
  int n;
  return EVP_EncryptFinal_ex(a->evp, tag, &n) == 1 && EVP_CIPHER_CTX_ctrl(a->evp, EVP_CTRL_AEAD_GET_TAG, TAG, tag) == 1;
}

/* 1 when `tag` is the record's, 0 when not (the plaintext must not be used), -1 when the cipher failed. */
static int aead_open_finish(struct aead *a, const uint8_t *tag) {
  if (a->c->gcm) {
    uint8_t mine[TAG], diff = 0;
    if (a->c->gcm_bits == 128) IMB_AES128_GCM_DEC_FINALIZE(imb, a->c->gcm, &a->gcm, mine, TAG);
    else IMB_AES256_GCM_DEC_FINALIZE(imb, a->c->gcm, &a->gcm, mine, TAG);
    for (int i = 0; i < TAG; i++) diff |= mine[i] ^ tag[i]; /* constant time */
    return diff == 0;
  }
  uint8_t ignored[16];
  int n;
  if (EVP_CIPHER_CTX_ctrl(a->evp, EVP_CTRL_AEAD_SET_TAG, TAG, (void *)tag) != 1) return -1;
  return EVP_DecryptFinal_ex(a->evp, ignored, &n) == 1;
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
  struct cipher_ctx *c = calloc(1, sizeof *c);
  if (!c) return type_error(env, "out of memory");
  c->encrypt = encrypt;
  if (imb && id != 3) {
    if (posix_memalign((void **)&c->gcm, 64, sizeof *c->gcm) != 0) {
      free(c);
      return type_error(env, "out of memory");
    }
    c->gcm_bits = id == 1 ? 128 : 256;
    if (id == 1) IMB_AES128_GCM_PRE(imb, key, c->gcm);
    else IMB_AES256_GCM_PRE(imb, key, c->gcm);
  } else if (!(c->tmpl = EVP_CIPHER_CTX_new()) || !(c->ctx = EVP_CIPHER_CTX_new()) ||
             EVP_CipherInit_ex(c->tmpl, cipher, NULL, key, NULL, encrypt ? 1 : 0) != 1 || EVP_CIPHER_CTX_copy(c->ctx, c->tmpl) != 1) {
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

/* A pool thread's own copy of c's EVP context (freed by the caller); NULL for AES-GCM, which needs none, or on failure. */
static EVP_CIPHER_CTX *thread_evp(const struct cipher_ctx *c) {
  if (c->gcm) return NULL;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx && EVP_CIPHER_CTX_copy(ctx, c->tmpl) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

/* A run of plaintext bytes (one chunk). */
struct piece {
  const uint8_t *data;
  size_t len;
};

/* Seals `total` bytes of pieces as records from `seq` into `out` with c (and `evp`, its EVP context for this thread, when it has one); 1 when done, 0 on failure. No N-API here: it runs on the thread pool too. */
static int seal_records(const struct cipher_ctx *c, EVP_CIPHER_CTX *evp, const uint8_t *iv, uint64_t seq, uint8_t type, const struct piece *pieces,
                        size_t total, size_t records, uint8_t *out) {
  struct aead a = {.c = c, .evp = evp};
  size_t pi = 0, ppos = 0; /* the current piece and how much of it is sealed */
  uint8_t *w = out;
  int ok = 1;
  for (size_t r = 0; r < records && ok; r++) {
    size_t len = total - r * RECORD_MAX;
    if (len > RECORD_MAX) len = RECORD_MAX;
    uint8_t nonce[IV_LEN];
    nonce_of(iv, seq + r, nonce);
    header_of(w, len + 1 + TAG);
    ok = aead_begin(&a, nonce, w);
    uint8_t *body = w + HEADER;
    size_t done = 0;
    while (ok && done < len) {
      while (ppos == pieces[pi].len) {
        pi++;
        ppos = 0;
      }
      size_t take = pieces[pi].len - ppos < len - done ? pieces[pi].len - ppos : len - done;
      ok = aead_update(&a, body + done, pieces[pi].data + ppos, take);
      ppos += take;
      done += take;
    }
    ok = ok && aead_update(&a, body + len, &type, 1) && aead_seal_finish(&a, body + len + 1);
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

/*
 * The calls of tlsSeal and tlsSealSend: reads `want` arguments (the first six tlsSeal's) into argv
 * and a, and seals; 1 when sealed, 0 when it threw (`usage` says what was expected).
 */
static int seal_call(napi_env env, napi_callback_info info, size_t want, napi_value *argv, struct seal_args *a, const char *usage) {
  size_t argc = want;
  a->pieces = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want || !get_seal_args(env, argv, a)) {
    free(a->pieces);
    type_error(env, usage);
    return 0;
  }
  int ok = seal_records(a->k.c, a->k.ctx, a->k.iv, a->k.seq, a->type, a->pieces, a->total, a->records, a->out);
  free(a->pieces);
  a->pieces = NULL;
  if (!ok) napi_throw_error(env, "EIO", "sealing a TLS record failed");
  return ok;
}

static napi_value tls_seal(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  struct seal_args a;
  if (!seal_call(env, info, 6, argv, &a, "expected (sealing ctx, iv, seq, type, chunks, out) with out large enough")) return NULL;
  return number(env, (int64_t)a.records);
}

/*
 * tlsSealSend: tlsSeal, then as much of the records as the socket `fd` takes now (send() with
 * MSG_DONTWAIT: never waits). Returns the bytes sent, or -errno when the socket failed.
 */
static napi_value tls_seal_send(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  struct seal_args a;
  int32_t fd;
  if (!seal_call(env, info, 7, argv, &a, "expected (sealing ctx, iv, seq, type, chunks, out, fd) with out large enough")) return NULL;
  if (napi_get_value_int32(env, argv[6], &fd) != napi_ok || fd < 0) return type_error(env, "expected (sealing ctx, iv, seq, type, chunks, out, fd)");
  size_t size = a.total + a.records * (HEADER + 1 + TAG), sent = 0;
  while (sent < size) {
    ssize_t n = send(fd, a.out + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) sent += (size_t)n;
    else if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    else if (errno != EINTR) return number(env, -(int64_t)errno);
  }
  return number(env, (int64_t)sent);
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
  EVP_CIPHER_CTX *ctx = thread_evp(j->a.k.c);
  j->ok = (ctx != NULL || j->a.k.c->gcm) && seal_records(j->a.k.c, ctx, j->iv, j->a.k.seq, j->a.type, j->a.pieces, j->a.total, j->a.records, j->a.out);
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
static void seal_file(EVP_CIPHER_CTX *ctx, struct seal_file_job *j) { /* ctx: the EVP context for this thread, if the cipher has one */
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
    if (!seal_records(j->k.c, ctx, j->iv, j->k.seq + r, j->type, p, len, 1, w)) j->err = EIO;
    w += HEADER + len + 1 + TAG;
  }
}

static void seal_file_execute(napi_env env, void *data) {
  (void)env;
  struct seal_file_job *j = data;
  EVP_CIPHER_CTX *ctx = thread_evp(j->k.c);
  if (!ctx && !j->k.c->gcm) j->err = EIO;
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

/* Opens one record with k's keys and sequence number `seq` (header at rec, clen bytes of ciphertext, then the tag) into out; 1 when authentic. *ok is 0 when the cipher failed. */
static int open_record(const struct keys *k, uint64_t seq, const uint8_t *rec, size_t clen, uint8_t *out, int *ok) {
  struct aead a = {.c = k->c, .evp = k->ctx};
  uint8_t nonce[IV_LEN];
  nonce_of(k->iv, seq, nonce);
  *ok = aead_begin(&a, nonce, rec) && aead_update(&a, out, rec + HEADER, clen);
  if (!*ok) return 0;
  int authentic = aead_open_finish(&a, rec + HEADER + clen);
  *ok = authentic >= 0;
  return authentic == 1;
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

  int ok, authentic = open_record(&k, k.seq, rec, clen, out + off, &ok);
  if (!ok) {
    napi_throw_error(env, "EIO", "opening a TLS record failed");
    return NULL;
  }
  return number(env, authentic ? (int64_t)clen : -1);
}

static napi_value tls_open_records(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  struct keys k;
  uint8_t *data, *out;
  size_t data_len, out_len;
  int64_t from, end, off;
  double *result;
  size_t result_len;
  napi_typedarray_type rt;
  napi_value rbuf;
  size_t roff;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 9 || !get_keys(env, argv, &k, 0) ||
      !get_buffer(env, argv[3], &data, &data_len) || napi_get_value_int64(env, argv[4], &from) != napi_ok ||
      napi_get_value_int64(env, argv[5], &end) != napi_ok || !get_buffer(env, argv[6], &out, &out_len) ||
      napi_get_value_int64(env, argv[7], &off) != napi_ok ||
      napi_get_typedarray_info(env, argv[8], &rt, &result_len, (void **)&result, &rbuf, &roff) != napi_ok || rt != napi_float64_array ||
      result_len < 4 || from < 0 || end < from || (size_t)end > data_len || off < 0 || (size_t)off > out_len)
    return type_error(env, "expected (opening ctx, iv, seq, data, from, end, out, outOffset, Float64Array(4))");
  size_t at = (size_t)from, filled = (size_t)off, control_end = 0;
  int64_t opened = 0, status = 0;
  while (at < (size_t)end) {
    if ((size_t)end - at < HEADER) return type_error(env, "a partial record before end");
    size_t len = ((size_t)data[at + 3] << 8) | data[at + 4];
    if (len < TAG + 1 || (size_t)end - at - HEADER < len) return type_error(env, "a partial or short record before end");
    size_t clen = len - TAG;
    if (out_len - filled < clen) return type_error(env, "out is too small");
    int ok;
    int authentic = open_record(&k, k.seq + (uint64_t)opened, data + at, clen, out + filled, &ok);
    if (!ok) {
      napi_throw_error(env, "EIO", "opening a TLS record failed");
      return NULL;
    }
    if (!authentic) {
      status = -1;
      break;
    }
    opened++;
    at += HEADER + len;
    size_t last = filled + clen; /* one past the inner plaintext; the content type is the last non-zero byte */
    while (last > filled && out[last - 1] == 0) last--;
    if (last == filled) {
      status = -2;
      break;
    }
    uint8_t type = out[last - 1];
    if (type == 23) {
      filled = last - 1; /* the next record opens over this one's type byte and padding */
      continue;
    }
    status = type;
    control_end = last - 1;
    break;
  }
  result[0] = (double)status;
  result[1] = (double)at;
  result[2] = (double)filled;
  result[3] = (double)control_end;
  return number(env, opened);
}

/* tlsAeadEngine() -> which code seals and opens AES-GCM records, e.g. "intel-ipsec-mb 1.3.0 avx512" or "openssl". */
static napi_value tls_aead_engine(napi_env env, napi_callback_info info) {
  (void)info;
  static const char *const archs[] = {"none", "no-aesni", "sse", "avx", "avx2", "avx512"};
  char text[64] = "openssl";
  if (imb) snprintf(text, sizeof text, "intel-ipsec-mb %s %s", imb_get_version_str(), imb_arch < sizeof archs / sizeof *archs ? archs[imb_arch] : "?");
  napi_value out;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &out);
  return out;
}

/* Sets `imb` up once per process: the addon is loaded by the main thread and by every chunk worker thread, possibly at once. */
static pthread_once_t imb_once = PTHREAD_ONCE_INIT;
static void imb_setup(void) {
  IMB_MGR *m = alloc_mb_mgr(0);
  if (!m) return;
  init_mb_mgr_auto(m, &imb_arch);
  if (imb_get_errno(m) != 0) {
    free_mb_mgr(m);
    return;
  }
  imb = m; /* published only once ready */
}

void register_tls_record(napi_env env, napi_value exports) {
  pthread_once(&imb_once, imb_setup);
  export_function(env, exports, "tlsAeadEngine", tls_aead_engine);
  export_function(env, exports, "tlsOpenRecords", tls_open_records);
  export_function(env, exports, "tlsCipher", tls_cipher);
  export_function(env, exports, "tlsSeal", tls_seal);
  export_function(env, exports, "tlsSealSend", tls_seal_send);
  export_function(env, exports, "tlsSealAsync", tls_seal_async);
  export_function(env, exports, "tlsSealFileAsync", tls_seal_file_async);
  export_function(env, exports, "tlsSealFile", tls_seal_file);
  export_function(env, exports, "tlsOpen", tls_open);
}
