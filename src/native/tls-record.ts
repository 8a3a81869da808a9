/**
 * TLS 1.3 record protection through rebound's native addon (src/native/tls-record.c): seal a batch
 * of plaintext into records, open one record or all the records of a socket read (AES-GCM with
 * intel-ipsec-mb, ChaCha20-Poly1305 with OpenSSL). Used by src/tls/record-stream.ts. Optional like the
 * whole addon: undefined when it is not built, and TLS connections then stay on Node's TLS socket.
 */
import { addonFunctions } from './addon.js';

/** The AEAD of a TLS 1.3 suite, as the addon numbers them. */
export const enum RecordCipher {
  Aes128Gcm = 1,
  Aes256Gcm = 2,
  ChaCha20Poly1305 = 3,
}

/** Largest plaintext of one record, and what each record adds to it (header, content type, tag). */
export const RECORD_PLAINTEXT_MAX = 16384;
export const RECORD_OVERHEAD = 5 + 1 + 16;
export const RECORD_HEADER = 5;
export const RECORD_TAG = 16;

/** A cipher context of the addon: one key, one direction (sealing or opening). */
export type CipherContext = { readonly __cipherContext: unique symbol };

export interface TlsRecordFunctions {
  /** Which code seals and opens AES-GCM records: "intel-ipsec-mb VERSION ARCH", or "openssl" when it could not start. */
  tlsAeadEngine(): string;
  /** A context for `key`; the key schedule is done here once. */
  tlsCipher(cipher: RecordCipher, key: Buffer, encrypt: boolean): CipherContext;
  /** Seals the chunks' bytes into records numbered from `seq` in `out`; returns how many. */
  tlsSeal(ctx: CipherContext, iv: Buffer, seq: bigint, type: number, chunks: Buffer[], out: Buffer): number;
  /**
   * tlsSeal, then as much of the records as the socket `fd` takes at once (never waits); returns the
   * bytes sent, or -errno when the socket failed. Absent from an addon built before it existed.
   */
  tlsSealSend?(ctx: CipherContext, iv: Buffer, seq: bigint, type: number, chunks: Buffer[], out: Buffer, fd: number): number;
  /** tlsSeal on libuv's thread pool; the chunks and `out` must stay unchanged until `done`. */
  tlsSealAsync(ctx: CipherContext, iv: Buffer, seq: bigint, type: number, chunks: Buffer[], out: Buffer, done: (err: Error | null, records: number) => void): void;
  /**
   * tlsSealAsync of `header` followed by `length` bytes of the file `fd` from `position`, read record
   * by record on the thread pool (never into a reply buffer); `out` must stay unchanged until `done`.
   * A file that ends early fails with code ENODATA. Absent from an addon built before it existed.
   */
  /** tlsSealFileAsync at once, on the calling thread; returns the records written. */
  tlsSealFile?(ctx: CipherContext, iv: Buffer, seq: bigint, type: number, header: Buffer, fd: number, position: number, length: number, out: Buffer): number;
  tlsSealFileAsync?(ctx: CipherContext, iv: Buffer, seq: bigint, type: number, header: Buffer, fd: number, position: number, length: number, out: Buffer, done: (err: Error | null, records: number) => void): void;
  /** Opens one whole record into out[outOffset...]; the inner length, or -1 when it is not authentic. */
  tlsOpen(ctx: CipherContext, iv: Buffer, seq: bigint, record: Buffer, out: Buffer, outOffset: number): number;
  /**
   * Opens the whole records in data[from, end) into out[outOffset...] (application data back to
   * back) until one of another inner type; returns how many authenticated, and fills `result`
   * (see OpenedRecords).
   */
  tlsOpenRecords(ctx: CipherContext, iv: Buffer, seq: bigint, data: Buffer, from: number, end: number, out: Buffer, outOffset: number, result: Float64Array): number;
}

/** The addon's record functions, or undefined when it is not built. */
export function tlsRecordFunctions(): TlsRecordFunctions | undefined {
  return addonFunctions<TlsRecordFunctions>('tlsCipher', 'tlsSeal', 'tlsSealAsync', 'tlsOpen', 'tlsOpenRecords', 'tlsAeadEngine');
}

/**
 * What tlsOpenRecords did, in its `result` array: [0] OPENED_ALL, the inner content type of the
 * record it stopped after, OPENED_NOT_AUTHENTIC or OPENED_NO_CONTENT_TYPE; [1] where the records
 * not opened start in `data`; [2] where the application data ends in `out`; [3] where the content
 * of the record it stopped after ends in `out` (it starts at [2]).
 */
export const OPENED_ALL = 0;
export const OPENED_NOT_AUTHENTIC = -1;
export const OPENED_NO_CONTENT_TYPE = -2;

/** Records that `plaintext` bytes make (an empty record still makes one). */
export function recordCount(plaintext: number): number {
  return Math.max(1, Math.ceil(plaintext / RECORD_PLAINTEXT_MAX));
}

/** Bytes that `plaintext` bytes take once sealed into records. */
export function sealedSize(plaintext: number): number {
  return plaintext + recordCount(plaintext) * RECORD_OVERHEAD;
}
