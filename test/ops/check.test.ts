// `tally check` on SQLite and PostgreSQL: a database written by Tally passes;
// each kind of damage (a totals row, a lost ledger row, a window, a breakdown,
// an orphaned hold, a reservation row, a missing migration) is found and named.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { checkDatabase, formatCheck } from "../../src/ops/check.ts";
import { openOpsDatabase } from "../../src/ops/database.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { startTestServer } from "../helpers.ts";

for (const kind of databaseKinds) {
  describe(`tally check (${kind})`, () => {
    const databases = new TestDatabases(kind, () => `sqlite:${join(mkdtempSync(join(tmpdir(), "tally-check-")), "tally.db")}`);
    let url: string;
    afterAll(() => databases.cleanup());

    /** A database written through Tally: budgets with a time zone, records
     * with labels, holds (one settled, one open), then the server stopped. */
    beforeEach(async () => {
      url = await databases.durable();
      const server = await startTestServer({ databaseUrl: url });
      const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
      await client.setProjectBudget({ projectId: "alpha", limitNanos: 10_000_000n, timeZone: "Asia/Tokyo" });
      await client.setProjectBudget({ projectId: "beta", limitNanos: 10_000_000n });
      for (let i = 0; i < 30; i++) {
        await client.recordCost({
          projectId: i % 3 === 0 ? "beta" : "alpha",
          requestId: `r${i}`,
          costNanos: BigInt(1_000 + i),
          inputTokens: 10n,
          outputTokens: BigInt(i),
          agentId: `a${i % 2}`,
          model: i % 4 === 0 ? "m1" : "m2",
        });
      }
      const settled = await client.checkBudget({
        projectId: "alpha",
        estimatedCostNanos: 500n,
        reserve: true,
        holdTtl: { seconds: 600n, nanos: 0 },
      });
      await client.recordCost({
        projectId: "alpha",
        requestId: "settle",
        costNanos: 400n,
        inputTokens: 1n,
        outputTokens: 1n,
        holdId: settled.holdId,
      });
      await client.checkBudget({ projectId: "beta", estimatedCostNanos: 700n, reserve: true, holdTtl: { seconds: 600n, nanos: 0 } });
      await server.close();
    });

    async function check() {
      const db = await openOpsDatabase(url);
      try {
        return await checkDatabase(db);
      } finally {
        await db.close();
      }
    }

    async function tamper(sql: string): Promise<void> {
      if (kind === "sqlite") {
        const db = new Database(url.slice("sqlite:".length));
        db.exec(sql);
        db.close();
        return;
      }
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(sql);
      await client.end();
    }

    it("passes a database Tally wrote, and reports its totals", async () => {
      const report = await check();
      expect(report.problems).toEqual([]);
      expect(report.projects).toBe(2);
      expect(report.records).toBe(31n);
      expect(report.totalCostNanos).toBe(BigInt(Array.from({ length: 30 }, (_, i) => 1_000 + i).reduce((a, b) => a + b, 0) + 400));
      expect(report.tableRows).toMatchObject({ cost_records: 31n, holds: 1n, project_budgets: 2n });
      expect(formatCheck(report).at(-1)).toBe("check: OK");
    });

    it("finds a totals row that differs from the ledger", async () => {
      await tamper("UPDATE project_totals SET total_cost_nanos = total_cost_nanos + 1 WHERE project_id = 'alpha'");
      const report = await check();
      expect(report.problems.join("\n")).toMatch(/project alpha: its totals .* differ from the running totals of its last ledger row/);
      expect(formatCheck(report).at(-1)).toMatch(/^check: FAILED: 1 problem/);
    });

    it("finds a ledger row that was lost", async () => {
      await tamper("DELETE FROM cost_records WHERE project_id = 'beta' AND request_id = 'r9'");
      expect((await check()).problems.join("\n")).toMatch(
        /project beta: its ledger rows add up to 9 records.*running totals say 10 records/,
      );
    });

    it("finds a day window that differs from the rows applied in it", async () => {
      await tamper("UPDATE project_totals SET day_cost_nanos = day_cost_nanos - 5 WHERE project_id = 'alpha'");
      expect((await check()).problems.join("\n")).toMatch(
        /project alpha: its day window \d{4}-\d\d-\d\d \(Asia\/Tokyo\) holds .* but the ledger rows applied since it began add up to/,
      );
    });

    it("finds a month window counting a record it does not have", async () => {
      await tamper("UPDATE project_totals SET month_record_count = month_record_count + 1 WHERE project_id = 'beta'");
      expect((await check()).problems.join("\n")).toMatch(/project beta: its month window \d{4}-\d\d \(UTC\) holds 11 records/);
    });

    it("finds a breakdown that differs from the ledger", async () => {
      await tamper(
        "UPDATE project_label_totals SET input_tokens = input_tokens + 3 WHERE project_id = 'alpha' AND agent_id = 'a1' AND model = 'm2'",
      );
      expect((await check()).problems.join("\n")).toMatch(/project alpha: its breakdown for agent "a1" and model "m2" holds/);
    });

    it("finds an orphaned hold and a reservation row that does not match its holds", async () => {
      await tamper(
        "INSERT INTO holds (hold_id, project_id, amount_nanos, created_at_ms, expires_at_ms) VALUES ('ghost', 'gamma', 5, 0, 99999999999999)",
      );
      await tamper("UPDATE project_reservations SET reserved_nanos = reserved_nanos + 1 WHERE project_id = 'beta'");
      const problems = (await check()).problems.join("\n");
      expect(problems).toMatch(/project gamma: 1 orphaned hold\(s\) \(5 nanos\) with no reservation row/);
      expect(problems).toMatch(/project beta: it counts 1 holds reserving 701 nanos, but has 1 hold rows reserving 700 nanos/);
    });

    it("refuses a schema that lacks a migration this Tally applies", async () => {
      await tamper("DELETE FROM mikro_orm_migrations WHERE name = 'Migration20261205210000_record_pricing'");
      expect((await check()).problems.join("\n")).toMatch(
        /the schema lacks migrations \(Migration20261205210000_record_pricing\): run `tally migrate`/,
      );
    });
  });
}
