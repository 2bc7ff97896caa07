// Builds the dashboard (web/) into dist/dashboard, which Tally serves at /.
// `npm run build` runs this; `npm start` runs it first (prestart). During
// development, `npx vite` serves the page with hot reload and forwards the API
// to a Tally on 127.0.0.1:8080.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  root: fileURLToPath(new URL("./web", import.meta.url)),
  base: "/",
  build: {
    outDir: fileURLToPath(new URL("./dist/dashboard", import.meta.url)),
    emptyOutDir: true,
    // No inline scripts or styles: the page runs under a strict CSP.
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: false,
  },
  server: {
    proxy: { "/tally.budget.v1.BudgetService": "http://127.0.0.1:8080" },
  },
});
