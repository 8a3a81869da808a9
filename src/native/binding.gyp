{
  "targets": [
    {
      "target_name": "rebound_native",
      "sources": ["addon.c", "seek.c", "tls-record.c", "socket-buffer.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
