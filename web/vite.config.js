// Builds the map, sign-in and console pages into the Python package (src/liaison/web/static/), served by
// Liaison under /static/. LIAISON_WEB_OUT overrides the output folder (scripts/check-web builds
// into a temporary one to compare).
import { resolve } from "node:path";
import { defineConfig } from "vite";

const root = import.meta.dirname;
const outDir = process.env.LIAISON_WEB_OUT ?? resolve(root, "../src/liaison/web/static");

export default defineConfig({
  root,
  base: "/static/",
  publicDir: resolve(root, "public"),
  build: {
    outDir,
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    // Keep every asset a file: the server's pages allow no data: URLs.
    assetsInlineLimit: 0,
    reportCompressedSize: true,
    chunkSizeWarningLimit: 1200,
    // Every browser the map supports preloads modules natively; no polyfill in the bundle.
    modulePreload: { polyfill: false },
    rollupOptions: {
      input: {
        index: resolve(root, "index.html"),
        login: resolve(root, "login.html"),
        // The operator console, served at /console to operators only (docs/web.md "Console").
        console: resolve(root, "console.html"),
      },
    },
  },
});
