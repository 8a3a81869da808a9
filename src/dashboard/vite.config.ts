// The dashboard's build (npm run build): src/dashboard -> dist/dashboard, served by the daemon at /
// (api/dashboard-routes.ts). JSX through esbuild's automatic runtime with Preact: no Babel preset.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root,
  base: '/',
  logLevel: 'warn',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: fileURLToPath(new URL('../../dist/dashboard', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    // No inline script: the daemon's Content-Security-Policy allows scripts from itself only.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
});
