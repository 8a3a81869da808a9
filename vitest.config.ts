import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Interop tests run real peers (QEMU, libnbd, fio): two files at a time fits 2 cores.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
