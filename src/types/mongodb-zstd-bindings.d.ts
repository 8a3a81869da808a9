// The raw binding of @mongodb-js/zstd 1.2.2: its public API ignores the level argument.
declare module '@mongodb-js/zstd/bindings.js' {
  const zstd: {
    compress(data: Uint8Array, level: number): Promise<Buffer>;
    decompress(data: Uint8Array): Promise<Buffer>;
  };
  export default zstd;
}
