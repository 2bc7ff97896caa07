import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Installs the pinned Python/Go tools into .tools/ if missing (client tests).
    globalSetup: ["test/global-setup.ts"],
    // Integration tests start real servers and child processes: generous bounds,
    // but no test asserts on timing.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // The JSON report lets .ci/run print one "N passed, N failed" line.
    reporters: ["default", "json"],
    outputFile: { json: "test-output/vitest-report.json" },
  },
});
