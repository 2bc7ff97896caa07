import { defineConfig } from "vitest/config";

// Two projects, one `npm test`: "fast" is the everyday loop (`npm run
// test:fast`: the domain, the API at three depths, the stores on SQLite, the
// transport's error writer and header check; no child processes, no browser,
// no installed tools), "slow" is everything else (crash and failover,
// PostgreSQL replicas, connection floods, the dashboard in Chromium, the
// Python/Go/TypeScript clients, conformance, CLI). CI runs both: `npm test`
// runs every project.
const fast = [
  "test/ledger/**/*.test.ts",
  "test/api/**/*.test.ts",
  "test/store/**/*.test.ts",
  "test/config-database.test.ts",
  "test/no-overspend.test.ts",
  "test/layout.test.ts",
  "test/transport/error-answers.test.ts",
  "test/transport/http-guard.test.ts",
];

export default defineConfig({
  test: {
    // Integration tests start real servers and child processes: generous bounds,
    // but no test asserts on timing.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // The JSON report lets .ci/run print one "N passed, N failed" line.
    reporters: ["default", "json"],
    outputFile: { json: "test-output/vitest-report.json" },
    projects: [
      { extends: true, test: { name: "fast", include: fast } },
      {
        extends: true,
        test: {
          name: "slow",
          include: ["test/**/*.test.ts"],
          exclude: fast,
          // Installs the pinned Python/Go tools into .tools/ if missing (client tests).
          globalSetup: ["test/global-setup.ts"],
        },
      },
    ],
  },
});
