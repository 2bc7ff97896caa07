// The stores' project listing and spend aggregate: the SQL behind ListProjects
// and the /metrics project gauges, on SQLite and PostgreSQL.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { int64Max } from "../../src/ledger/money.ts";
import type { WriteOp } from "../../src/ledger/store.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";

const record = (projectId: string, costNanos: bigint, requestId = "r"): WriteOp => ({
  kind: "record",
  entry: { projectId, requestId, costNanos, inputTokens: 0n, outputTokens: 0n, agentId: "", model: "" },
});
const budget = (projectId: string, limitNanos: bigint, currency: string | null = null): WriteOp => ({ kind: "setBudget", change: { projectId, limitNanos, currency } });

for (const kind of databaseKinds) describe(`project listing on ${kind}`, () => {
  const databases = new TestDatabases(kind);
  let init: InitializedStore;
  beforeEach(async () => {
    init = await initORM(await databases.scratch());
  });
  afterEach(async () => {
    await init.store.close();
    await databases.cleanup();
  });

  it("lists the union of projects with totals and with budgets, by id after a cursor", async () => {
    await init.store.commitBatch([budget("c", 10n), record("a", 1n), record("c", 2n), budget("b", 5n), record("d", 3n)], 1_000);
    const ids = async (after: string | null, limit: number) =>
      (await init.store.listProjects({ order: "project_id", after: after === null ? null : { projectId: after, spentNanos: 0n }, limit })).map((e) => e.totals.projectId);
    expect(await ids(null, 10)).toEqual(["a", "b", "c", "d"]);
    expect(await ids(null, 2)).toEqual(["a", "b"]);
    expect(await ids("b", 2)).toEqual(["c", "d"]);
    expect(await ids("d", 2)).toEqual([]);
    const [c] = await init.store.listProjects({ order: "project_id", after: { projectId: "b", spentNanos: 0n }, limit: 1 });
    expect(c).toMatchObject({ totals: { projectId: "c", totalCostNanos: 2n, recordCount: 1n, updatedAtMs: 1_000 }, budget: { limitNanos: 10n, configured: true } });
  });

  it("lists by spend descending with a keyset cursor through ties", async () => {
    await init.store.commitBatch([record("x", 5n), record("y", 5n), record("z", 7n), budget("w", 1n), record("v", 5n)], 1_000);
    const page = (after: { projectId: string; spentNanos: bigint } | null, limit: number) =>
      init.store.listProjects({ order: "spent_desc", after, limit }).then((es) => es.map((e) => e.totals.projectId));
    expect(await page(null, 10)).toEqual(["z", "v", "x", "y", "w"]);
    expect(await page({ projectId: "v", spentNanos: 5n }, 2)).toEqual(["x", "y"]);
    expect(await page({ projectId: "y", spentNanos: 5n }, 10)).toEqual(["w"]);
  });

  it("sums spend per currency without overflowing past int64", async () => {
    await init.store.commitBatch([budget("eu", 0n, "EUR"), record("eu", 4n), record("us1", int64Max), record("us2", int64Max), budget("no-costs", 1n, "GBP")], 1_000);
    const spend = await init.store.spendByCurrency();
    expect(spend).toEqual([
      { currency: "EUR", totalCostNanos: 4, projects: 1 },
      { currency: "USD", totalCostNanos: 2 * Number(int64Max), projects: 2 },
    ]);
  });
});
