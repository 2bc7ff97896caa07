// Nested budgets' cost (issue 18): CheckBudget and RecordCost on a project at
// depth 4 (org > bu > team > project, a limit at every level) against a flat
// project with the same limit, and on a "capped" depth-4 project that also
// has a spend rate at every level and agent caps, called with an agent_id
// (every rate bucket, agent window and cap read exercised, never reached), through a served Tally on loopback, driven by
// the Node.js load driver (its own process, gRPC over one HTTP/2 connection).
// Rounds interleave flat and deep (order alternating), each run bounded in
// time; prints medians and the spread of the rounds, and the deep/flat ratio
// the issue bounds at 1.5x.
// Usage: node bench/nested.ts [--rounds 3] [--seconds 3] [--concurrency 16]
//   [--postgres-url URL]   (a role that may CREATE DATABASE; default
//   TALLY_BENCH_POSTGRES_URL or TALLY_TEST_POSTGRES_URL; none: SQLite only)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { BudgetService } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { defaultConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { startServer } from "../src/server.ts";
import { runNodeDriver } from "./load/node-driver.ts";
import type { LoadResult, Rpc } from "./load/types.ts";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "3" },
    concurrency: { type: "string", default: "16" },
    "postgres-url": { type: "string" },
  },
});
const rounds = Number(values.rounds);
const durationMs = Number(values.seconds) * 1000;
const concurrency = Number(values.concurrency);
const postgresAdmin = values["postgres-url"] ?? process.env.TALLY_BENCH_POSTGRES_URL ?? process.env.TALLY_TEST_POSTGRES_URL;
const projects = 4;
const limitNanos = 1_000_000_000_000_000n; // never reached: every level decides "allowed"

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const spread = (xs: number[]) => `${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}`;

async function measure(kind: string, databaseUrl: string): Promise<string[]> {
  const config = { ...defaultConfig, port: 0, host: "127.0.0.1", databaseUrl, logLevel: "silent" as const };
  const server = await startServer(config, createLogger("silent"));
  const lines: string[] = [];
  try {
    const address = new URL(server.url).host;
    const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
    await client.setProjectBudget({ projectId: "org", limitNanos });
    await client.setProjectBudget({ projectId: "bu", limitNanos, parentId: "org" });
    await client.setProjectBudget({ projectId: "team", limitNanos, parentId: "bu" });
    const rate = { rateLimitNanosPerMinute: limitNanos };
    await client.setProjectBudget({ projectId: "c-org", limitNanos, ...rate });
    await client.setProjectBudget({ projectId: "c-bu", limitNanos, parentId: "c-org", ...rate });
    await client.setProjectBudget({ projectId: "c-team", limitNanos, parentId: "c-bu", ...rate });
    for (let p = 0; p < projects; p++) {
      await client.setProjectBudget({ projectId: `flat-${p}`, limitNanos });
      await client.setProjectBudget({ projectId: `deep-${p}`, limitNanos, parentId: "team" });
      await client.setProjectBudget({
        projectId: `capped-${p}`,
        limitNanos,
        parentId: "c-team",
        ...rate,
        agentLimitNanos: limitNanos,
        agentDailyLimitNanos: limitNanos,
        agentRateLimitNanosPerMinute: limitNanos,
      });
    }
    const results = new Map<string, LoadResult[]>();
    for (let round = 0; round < rounds; round++) {
      for (const rpc of ["CheckBudget", "RecordCost"] as Rpc[]) {
        const shapes = round % 2 === 0 ? ["flat", "deep", "capped"] : ["capped", "deep", "flat"];
        for (const shape of shapes) {
          const result = await runNodeDriver({
            address,
            rpc,
            concurrency,
            durationMs,
            tag: `${kind}-${shape}-${round}`,
            projectPrefix: `${shape}-`,
            projects,
            model: "",
            ...(shape === "capped" ? { agentId: "bench-agent" } : {}),
          });
          const key = `${rpc} ${shape}`;
          results.set(key, [...(results.get(key) ?? []), result]);
        }
      }
    }
    for (const rpc of ["CheckBudget", "RecordCost"]) {
      const flat = results.get(`${rpc} flat`)!;
      const deep = results.get(`${rpc} deep`)!;
      const capped = results.get(`${rpc} capped`)!;
      const rps = (rs: LoadResult[]) => rs.map((r) => r.rps);
      const p50 = (rs: LoadResult[]) => rs.map((r) => r.p50Ms);
      const errors = [...flat, ...deep, ...capped].reduce((n, r) => n + r.errors, 0);
      lines.push(
        `| ${kind} | ${rpc} | ${median(rps(flat)).toFixed(0)} (${spread(rps(flat))}) | ${median(rps(deep)).toFixed(0)} (${spread(rps(deep))}) | ` +
          `${median(rps(capped)).toFixed(0)} (${spread(rps(capped))}) | ` +
          `${median(p50(flat)).toFixed(2)} | ${median(p50(deep)).toFixed(2)} | ${median(p50(capped)).toFixed(2)} | ` +
          `${(median(rps(flat)) / median(rps(deep))).toFixed(2)}x | ${(median(rps(flat)) / median(rps(capped))).toFixed(2)}x | ${errors} |`,
      );
    }
    // The tree's rollup is exact after the load: the org's total is its leaves'.
    const org = (await client.getProjectCost({ projectId: "org" })).projectCost!;
    let leaves = 0n;
    for (let p = 0; p < projects; p++) leaves += (await client.getProjectCost({ projectId: `deep-${p}` })).projectCost!.totalCostNanos;
    if (org.totalCostNanos !== leaves) throw new Error(`${kind}: org total ${org.totalCostNanos} != its leaves' ${leaves}`);
    lines.push(
      `|  | (check: org = sum of its depth-4 leaves = ${org.totalCostNanos} nanos over ${org.recordCount} records) |  |  |  |  |  |  |  |  |  |`,
    );
  } finally {
    await server.close();
  }
  return lines;
}

const out = [
  `Nested budgets, depth 4 vs flat: ${rounds} interleaved rounds of ${durationMs / 1000} s per cell, concurrency ${concurrency}, ${projects} projects, Node.js driver (gRPC h2c).`,
  "",
  "| store | RPC | flat calls/s (spread) | depth-4 calls/s (spread) | capped calls/s (spread) | flat p50 ms | depth-4 p50 ms | capped p50 ms | flat/deep | flat/capped | errors |",
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
];
const dir = mkdtempSync(join(tmpdir(), "tally-bench-nested-"));
try {
  out.push(...(await measure("SQLite", `sqlite:${join(dir, "tally.db")}`)));
  if (postgresAdmin) {
    const name = `tally_bench_nested_${process.pid}`;
    const admin = new pg.Client({ connectionString: postgresAdmin });
    await admin.connect();
    await admin.query(`CREATE DATABASE "${name}"`);
    try {
      const url = new URL(postgresAdmin);
      url.pathname = `/${name}`;
      out.push(...(await measure("PostgreSQL", url.toString())));
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.end();
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(out.join("\n"));
