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
const reserve = (projectId: string, holdId: string, estimatedCostNanos: bigint, ttlMs: number): WriteOp => ({
  kind: "reserve",
  request: { projectId, holdId, estimatedCostNanos, ttlMs, requestId: "" },
});
const budget = (projectId: string, limitNanos: bigint, currency: string | null = null): WriteOp => ({
  kind: "setBudget",
  change: { projectId, limitNanos, currency },
});

for (const kind of databaseKinds)
  describe(`project listing on ${kind}`, () => {
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
        (
          await init.store.listProjects(
            { order: "project_id", after: after === null ? null : { projectId: after, spentNanos: 0n }, limit },
            1_000,
          )
        ).map((e) => e.totals.projectId);
      expect(await ids(null, 10)).toEqual(["a", "b", "c", "d"]);
      expect(await ids(null, 2)).toEqual(["a", "b"]);
      expect(await ids("b", 2)).toEqual(["c", "d"]);
      expect(await ids("d", 2)).toEqual([]);
      const [c] = await init.store.listProjects({ order: "project_id", after: { projectId: "b", spentNanos: 0n }, limit: 1 }, 1_000);
      expect(c).toMatchObject({
        totals: { projectId: "c", totalCostNanos: 2n, recordCount: 1n, updatedAtMs: 1_000 },
        budget: { limitNanos: 10n, configured: true },
      });
    });

    it("lists by spend descending with a keyset cursor through ties", async () => {
      await init.store.commitBatch([record("x", 5n), record("y", 5n), record("z", 7n), budget("w", 1n), record("v", 5n)], 1_000);
      const page = (after: { projectId: string; spentNanos: bigint } | null, limit: number) =>
        init.store.listProjects({ order: "spent_desc", after, limit }, 1_000).then((es) => es.map((e) => e.totals.projectId));
      expect(await page(null, 10)).toEqual(["z", "v", "x", "y", "w"]);
      expect(await page({ projectId: "v", spentNanos: 5n }, 2)).toEqual(["x", "y"]);
      expect(await page({ projectId: "y", spentNanos: 5n }, 10)).toEqual(["w"]);
    });

    it("sums spend per currency without overflowing past int64", async () => {
      await init.store.commitBatch(
        [budget("eu", 0n, "EUR"), record("eu", 4n), record("us1", int64Max), record("us2", int64Max), budget("no-costs", 1n, "GBP")],
        1_000,
      );
      const spend = await init.store.spendByCurrency();
      expect(spend).toEqual([
        { currency: "EUR", totalCostNanos: 4, projects: 1 },
        { currency: "USD", totalCostNanos: 2 * Number(int64Max), projects: 2 },
      ]);
    });

    it("gives each listed project its active holds, as getBudgetState counts them, in one statement for the page", async () => {
      await init.store.commitBatch(
        [
          budget("eu", 0n, "EUR"),
          reserve("eu", "h1", 7n, 10_000), // expires at 11_000
          reserve("eu", "h2", 5n, 1_000), // expires at 2_000
          reserve("us", "h3", 3n, 1_000), // expires at 2_000
          record("us", 1n),
          reserve("holds-only", "h5", 2n, 10_000), // listed projects have costs or a budget: not this one
          record("none", 1n),
          reserve("settled", "h4", 9n, 10_000),
          {
            kind: "record",
            entry: {
              projectId: "settled",
              requestId: "r",
              costNanos: 4n,
              inputTokens: 0n,
              outputTokens: 0n,
              agentId: "",
              model: "",
              holdId: "h4",
            },
          },
        ],
        1_000,
      );
      const holdsAt = async (nowMs: number) => {
        const entries = await init.store.listProjects({ order: "project_id", after: null, limit: 10 }, nowMs);
        const listed = Object.fromEntries(entries.map((e) => [e.totals.projectId, [e.reservedNanos, e.activeHoldCount]]));
        // The same numbers as the per-project decision read.
        for (const e of entries) {
          const state = await init.store.getBudgetState(e.totals.projectId, nowMs);
          expect([e.reservedNanos, e.activeHoldCount], e.totals.projectId).toEqual([state.reservedNanos, state.activeHoldCount]);
        }
        return listed;
      };
      expect(await holdsAt(1_500)).toEqual({ eu: [12n, 2n], none: [0n, 0n], settled: [0n, 0n], us: [3n, 1n] });
      // Expired holds stop counting at once, before any sweep...
      expect(await holdsAt(2_000)).toEqual({ eu: [7n, 1n], none: [0n, 0n], settled: [0n, 0n], us: [0n, 0n] });
      // ...and the sweep changes nothing that is listed.
      expect(await init.store.deleteExpiredHolds(2_000, 100)).toBe(2);
      expect(await holdsAt(2_000)).toEqual({ eu: [7n, 1n], none: [0n, 0n], settled: [0n, 0n], us: [0n, 0n] });
      expect(await holdsAt(11_000)).toEqual({ eu: [0n, 0n], none: [0n, 0n], settled: [0n, 0n], us: [0n, 0n] });
    });

    it("sums active holds per currency, leaving out expired ones before the sweep", async () => {
      expect(await init.store.reservedByCurrency(1_000)).toEqual([]);
      await init.store.commitBatch(
        [
          budget("eu", 0n, "EUR"),
          reserve("eu", "h1", 7n, 10_000),
          reserve("eu", "h2", 5n, 1_000),
          reserve("us", "h3", 3n, 1_000),
          reserve("us2", "h4", 4n, 10_000),
          budget("gb", 0n, "GBP"),
          reserve("gb", "h5", 1n, 500),
        ],
        1_000,
      );
      expect(await init.store.reservedByCurrency(1_000)).toEqual([
        { currency: "EUR", reservedNanos: 12, activeHolds: 2 },
        { currency: "GBP", reservedNanos: 1, activeHolds: 1 },
        { currency: "USD", reservedNanos: 7, activeHolds: 2 },
      ]);
      const at2000 = [
        { currency: "EUR", reservedNanos: 7, activeHolds: 1 },
        { currency: "GBP", reservedNanos: 0, activeHolds: 0 },
        { currency: "USD", reservedNanos: 4, activeHolds: 1 },
      ];
      expect(await init.store.reservedByCurrency(2_000)).toEqual(at2000);
      await init.store.deleteExpiredHolds(2_000, 100);
      // Swept: GBP has no hold rows left (its reservation row stays at 0).
      expect(await init.store.reservedByCurrency(2_000)).toEqual(at2000.filter((c) => c.currency !== "GBP"));
    });
  });
