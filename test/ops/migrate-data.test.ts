// `tally migrate-data` from a SQLite file Tally wrote (budgets with zones and
// alerts, records with labels and catalog prices, settled and open holds,
// reservation keys, an archived project) into PostgreSQL: both ends pass
// check and agree; a second run changes nothing; an interrupted ledger copy
// resumes; a served source and a target holding another ledger are refused;
// and on PostgreSQL, retries of SQLite's request_ids are duplicates.
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { tallyCli } from "../../bench/lib/process.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { codeOf, startTestServer } from "../helpers.ts";

const run = promisify(execFile);

function migrate(from: string, to: string, ...extra: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [tallyCli, "migrate-data", "--from", from, "--to", to, ...extra]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );
}

async function sql(url: string, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(text);
  } finally {
    await client.end();
  }
}

describe.skipIf(!databaseKinds.includes("postgresql"))("tally migrate-data (SQLite -> PostgreSQL)", () => {
  const databases = new TestDatabases("postgresql");
  const sqlitePath = join(mkdtempSync(join(tmpdir(), "tally-migrate-")), "tally.db");
  const from = `sqlite:${sqlitePath}`;
  let openHoldId = "";
  let settledHold = "";
  afterAll(() => databases.cleanup());

  beforeAll(async () => {
    const server = await startTestServer({ databaseUrl: from });
    const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
    await client.setModelPrice({
      model: "m-priced",
      currency: "USD",
      inputNanosPerMillion: 3_000_000_000n,
      outputNanosPerMillion: 15_000_000_000n,
      effectiveFrom: { seconds: 1_000_000n, nanos: 0 },
      source: "test price list",
    });
    await client.setProjectBudget({
      projectId: "alpha",
      limitNanos: 100_000_000n,
      dailyLimitNanos: 50_000_000n,
      timeZone: "America/New_York",
      alertThresholds: { basisPoints: [5_000] },
    });
    await client.setProjectBudget({ projectId: "beta", limitNanos: 100_000_000n });
    for (let i = 0; i < 120; i++) {
      await client.recordCost({
        projectId: i % 4 === 0 ? "beta" : "alpha",
        requestId: `r${i}`,
        costNanos: BigInt(10_000 + i * 7),
        inputTokens: BigInt(i),
        outputTokens: 3n,
        agentId: `agent-${i % 3}`,
        model: i % 2 ? "m-priced" : "m-other",
      });
    }
    const settled = await client.checkBudget({
      projectId: "alpha",
      estimatedCostNanos: 9_000n,
      reserve: true,
      holdTtl: { seconds: 3_600n, nanos: 0 },
      requestId: "reserve-settled",
    });
    settledHold = settled.holdId;
    await client.recordCost({
      projectId: "alpha",
      requestId: "settles",
      costNanos: 8_000n,
      inputTokens: 1n,
      outputTokens: 1n,
      holdId: settled.holdId,
    });
    openHoldId = (
      await client.checkBudget({
        projectId: "beta",
        estimatedCostNanos: 7_000n,
        reserve: true,
        holdTtl: { seconds: 3_600n, nanos: 0 },
        requestId: "reserve-open",
      })
    ).holdId;
    await client.recordCost({ projectId: "gamma", requestId: "g1", costNanos: 5n, inputTokens: 0n, outputTokens: 0n });
    await client.archiveProject({ projectId: "gamma" });
    await server.close();
  });

  it("copies every table, checks both ends, prints both totals, and a second run changes nothing", { timeout: 120_000 }, async () => {
    const to = await databases.durable();
    const first = await migrate(from, to);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/migrate-data: \[#+\] 100\.0% \d+\/\d+ rows, \d+ rows\/s, ETA 0 s \(cost_records 122\/122\)/);
    const source = /source totals: (.*)/.exec(first.stdout)?.[1];
    expect(source).toMatch(
      /^3 projects, 122 records, total \d+ nanos; project_budgets=2 project_archives=1 model_prices=1 project_totals=3 project_label_totals=11 project_reservations=2 holds=1 reserve_keys=2 agent_windows=6 rate_buckets=0 rate_holds=0 cost_records=122$/,
    );
    expect(first.stdout).toContain(`target totals: ${source}`);
    expect(first.stdout).toMatch(/OK: both ends pass tally check and agree/);

    const second = await migrate(from, to);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/ledger: 0 new rows, 122 already there/);
    expect(second.stdout).toContain(`target totals: ${source}`);

    // On PostgreSQL: retries of SQLite's requests are duplicates, a changed
    // payload is refused, a reservation retry gets its hold back, the open
    // hold is still counted and settles, new records get new ids.
    const server = await startTestServer({ databaseUrl: to });
    try {
      const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
      expect(
        (
          await client.recordCost({
            projectId: "alpha",
            requestId: "r1",
            costNanos: 10_007n,
            inputTokens: 1n,
            outputTokens: 3n,
            agentId: "agent-1",
            model: "m-priced",
          })
        ).duplicate,
      ).toBe(true);
      expect(
        await codeOf(
          client.recordCost({
            projectId: "alpha",
            requestId: "r1",
            costNanos: 1n,
            inputTokens: 1n,
            outputTokens: 3n,
            agentId: "agent-1",
            model: "m-priced",
          }),
        ),
      ).toBe(Code.AlreadyExists);
      expect(
        (
          await client.checkBudget({
            projectId: "beta",
            estimatedCostNanos: 7_000n,
            reserve: true,
            holdTtl: { seconds: 3_600n, nanos: 0 },
            requestId: "reserve-open",
          })
        ).holdId,
      ).toBe(openHoldId);
      const settledRetry = client.checkBudget({
        projectId: "alpha",
        estimatedCostNanos: 9_000n,
        reserve: true,
        holdTtl: { seconds: 3_600n, nanos: 0 },
        requestId: "reserve-settled",
      });
      await expect(settledRetry).rejects.toThrow(
        new RegExp(`request_id "reserve-settled" already reserved hold "${settledHold}", which is no longer active`),
      );
      const beta = (await client.getProjectCost({ projectId: "beta" })).projectCost;
      expect(beta?.reservedNanos).toBe(7_000n);
      expect(beta?.recordCount).toBe(30n);
      expect(
        (
          await client.recordCost({
            projectId: "beta",
            requestId: "after",
            costNanos: 6_000n,
            inputTokens: 0n,
            outputTokens: 0n,
            holdId: openHoldId,
          })
        ).duplicate,
      ).toBe(false);
      expect(
        await codeOf(client.recordCost({ projectId: "gamma", requestId: "g2", costNanos: 1n, inputTokens: 0n, outputTokens: 0n })),
      ).toBe(Code.FailedPrecondition); // still archived
    } finally {
      await server.close();
    }
  });

  it("resumes an interrupted ledger copy, refuses a target holding another ledger, and --restart copies anew", {
    timeout: 120_000,
  }, async () => {
    const to = await databases.durable();
    expect((await migrate(from, to)).code).toBe(0);
    // As if the run had stopped after the chunks before the last 20 rows.
    await sql(to, "DELETE FROM cost_records WHERE id > (SELECT max(id) - 20 FROM cost_records)");
    const resumed = await migrate(from, to);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/ledger: 20 new rows, 102 already there/);

    await sql(
      to,
      "INSERT INTO cost_records (id, project_id, request_id, cost_nanos, input_tokens, output_tokens, recorded_at_ms, total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after) VALUES (999999, 'other', 'x', 1, 0, 0, 0, 1, 0, 0, 1)",
    );
    const refused = await migrate(from, to);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /^tally migrate-data: the PostgreSQL table cost_records already has 123 rows that did not come from this SQLite database .*pass --restart/m,
    );
    const restarted = await migrate(from, to, "--restart");
    expect(restarted.code, restarted.stderr).toBe(0);
    expect(restarted.stdout).toMatch(/ledger: 122 new rows, 0 already there/);
  });

  it("refuses a source a server is serving, with one line saying what to do", { timeout: 60_000 }, async () => {
    const to = await databases.durable();
    const server = await startTestServer({ databaseUrl: from });
    try {
      const refused = await migrate(from, to);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(
        /^tally migrate-data: the SQLite database .* is already served by another Tally process .*: stop it first; a copy of a database that is still taking writes would miss them\n$/,
      );
    } finally {
      await server.close();
    }
  });
});
