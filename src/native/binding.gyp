{
  "targets": [
    {
      "target_name": "rebound_native",
      "sources": ["addon.c", "seek.c", "tls-record.c", "socket-buffer.c", "zstd.c", "crc32.c", "send-file.c", "memory.c", "read-cached.c"],
      "libraries": ["-lzstd", "-ldeflate", "-lIPSec_MB"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
