{
  "targets": [
    {
      "target_name": "rebound_native",
      "sources": ["seek.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
