// Batches of many records, on both stores: PostgreSQL applies a run of records
// as summed increments per project with each ledger row's own totals computed
// in JS (decision 0012), SQLite one statement per record; both must give the
// same answers and rows. Each case fails if a sum, a running total, a
// duplicate, a refusal in the middle of a batch or a settled hold were wrong.
import { afterEach, describe, expect, it } from "vitest";
import { HoldNotActiveError, IdempotencyConflictError, TotalOverflowError } from "../../src/ledger/errors.ts";
import { int64Max } from "../../src/ledger/money.ts";
import type { LedgerStore, OpResult, ReserveOutcome, WriteOp } from "../../src/ledger/store.ts";
import type { CostEntry, RecordOutcome } from "../../src/ledger/types.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { tempDatabaseUrl } from "../helpers.ts";

const record = (over: Partial<CostEntry>): WriteOp => ({
  kind: "record",
  entry: { projectId: "p", requestId: "r", costNanos: 1n, inputTokens: 0n, outputTokens: 0n, agentId: "", model: "", ...over },
});
const reserve = (holdId: string, estimatedCostNanos: bigint, projectId = "p"): WriteOp => ({
  kind: "reserve",
  request: { projectId, estimatedCostNanos, holdId, ttlMs: 60_000, requestId: "" },
});
const resultValue = <T>(result: OpResult | undefined): T => {
  if (result === undefined || !result.ok) throw new Error(`expected ok, got ${result === undefined ? "nothing" : result.error.message}`);
  return result.value as T;
};
const errorOf = (result: OpResult | undefined): Error => {
  if (result === undefined || result.ok) throw new Error("expected a refusal");
  return result.error;
};
/** Every record of a project, oldest first: [request_id, cost, total after]. */
async function ledgerOf(store: LedgerStore, projectId: string): Promise<Array<[string, bigint, bigint]>> {
  const rows = await store.listCostRecords({ projectId, startMs: null, endMs: null, after: null, limit: 1_000 });
  return rows.map((r) => [r.requestId, r.costNanos, r.totalCostNanosAfter]);
}

for (const kind of databaseKinds)
  describe(`store on ${kind}: batches of records`, () => {
    const databases = new TestDatabases(kind, tempDatabaseUrl);
    let opened: InitializedStore[] = [];
    const open = async () => {
      const init = await initORM(await databases.scratch());
      opened.push(init);
      return init.store;
    };
    afterEach(async () => {
      for (const init of opened) await init.store.close().catch(() => undefined);
      opened = [];
      await databases.cleanup();
    });

    it("gives every write of a project its own running totals and adds the batch's sum once, with other projects interleaved", async () => {
      const store = await open();
      await store.commitBatch(
        [record({ projectId: "a", requestId: "before", costNanos: 100n, inputTokens: 1n, agentId: "x", model: "m1" })],
        1_000,
      );
      const ops = [
        record({ projectId: "a", requestId: "a1", costNanos: 3n, inputTokens: 10n, outputTokens: 1n, agentId: "x", model: "m1" }),
        record({ projectId: "b", requestId: "b1", costNanos: 1_000n, agentId: "y", model: "m1" }),
        record({ projectId: "a", requestId: "a2", costNanos: 5n, inputTokens: 20n, outputTokens: 2n, agentId: "z", model: "m2" }),
        record({ projectId: "a", requestId: "a3", costNanos: 7n, inputTokens: 30n, outputTokens: 3n, agentId: "x", model: "m2" }),
        record({ projectId: "b", requestId: "b2", costNanos: 2_000n, agentId: "y", model: "m1" }),
      ];
      const results = await store.commitBatch(ops, 2_000);
      expect(
        results.map((r) => [
          resultValue<RecordOutcome>(r).totals.totalCostNanos,
          resultValue<RecordOutcome>(r).totals.recordCount,
          resultValue<RecordOutcome>(r).totals.inputTokens,
        ]),
      ).toEqual([
        [103n, 2n, 11n],
        [1_000n, 1n, 0n],
        [108n, 3n, 31n],
        [115n, 4n, 61n],
        [3_000n, 2n, 0n],
      ]);
      expect(
        results.every((r) => resultValue<RecordOutcome>(r).totals.updatedAtMs === 2_000 && !resultValue<RecordOutcome>(r).duplicate),
      ).toBe(true);
      expect(await store.getTotals("a")).toMatchObject({
        totalCostNanos: 115n,
        inputTokens: 61n,
        outputTokens: 6n,
        recordCount: 4n,
        updatedAtMs: 2_000,
      });
      expect(await store.getTotals("b")).toMatchObject({ totalCostNanos: 3_000n, recordCount: 2n });
      expect(await ledgerOf(store, "a")).toEqual([
        ["before", 100n, 100n],
        ["a1", 3n, 103n],
        ["a2", 5n, 108n],
        ["a3", 7n, 115n],
      ]);
      expect(await ledgerOf(store, "b")).toEqual([
        ["b1", 1_000n, 1_000n],
        ["b2", 2_000n, 3_000n],
      ]);
      const byAgent = await store.getBreakdown("a", "agent", 10);
      expect(byAgent.entries.map((e) => [e.key, e.totalCostNanos, e.recordCount, e.inputTokens])).toEqual([
        ["x", 110n, 3n, 41n],
        ["z", 5n, 1n, 20n],
      ]);
      const byModel = await store.getBreakdown("a", "model", 10);
      expect(byModel.entries.map((e) => [e.key, e.totalCostNanos, e.recordCount])).toEqual([
        ["m1", 103n, 2n],
        ["m2", 12n, 2n],
      ]);
      const state = await store.getBudgetState("a", 2_000);
      expect([state.day.totalCostNanos, state.day.recordCount, state.month.totalCostNanos, state.month.inputTokens]).toEqual([
        115n,
        4n,
        115n,
        61n,
      ]);
    });

    it("answers duplicates and new writes of one batch apart: an earlier key, a key repeated in the batch, a key reused with another payload", async () => {
      const store = await open();
      await store.commitBatch([record({ requestId: "old", costNanos: 10n })], 1_000);
      const results = await store.commitBatch(
        [
          record({ requestId: "n1", costNanos: 1n }),
          record({ requestId: "old", costNanos: 10n }), // recorded by an earlier batch
          record({ requestId: "n2", costNanos: 2n }),
          record({ requestId: "n1", costNanos: 1n }), // repeated within this batch
          record({ requestId: "n2", costNanos: 3n }), // reused with another payload
          record({ requestId: "n3", costNanos: 4n }),
        ],
        2_000,
      );
      expect(resultValue<RecordOutcome>(results[0]).totals).toMatchObject({ totalCostNanos: 11n, recordCount: 2n });
      expect(resultValue<RecordOutcome>(results[1])).toMatchObject({
        duplicate: true,
        totals: { totalCostNanos: 10n, recordCount: 1n, updatedAtMs: 1_000 },
      });
      expect(resultValue<RecordOutcome>(results[2]).totals).toMatchObject({ totalCostNanos: 13n, recordCount: 3n });
      expect(resultValue<RecordOutcome>(results[3])).toMatchObject({
        duplicate: true,
        totals: { totalCostNanos: 11n, recordCount: 2n, updatedAtMs: 2_000 },
      });
      expect(errorOf(results[4])).toBeInstanceOf(IdempotencyConflictError);
      expect(resultValue<RecordOutcome>(results[5])).toMatchObject({ duplicate: false, totals: { totalCostNanos: 17n, recordCount: 4n } });
      expect(await store.getTotals("p")).toMatchObject({ totalCostNanos: 17n, recordCount: 4n });
      expect(await ledgerOf(store, "p")).toEqual([
        ["old", 10n, 10n],
        ["n1", 1n, 11n],
        ["n2", 2n, 13n],
        ["n3", 4n, 17n],
      ]);
      expect((await store.getBreakdown("p", "model", 10)).entries[0]).toMatchObject({ totalCostNanos: 17n, recordCount: 4n });
    });

    it("refuses an overflowing write in the middle of a batch and counts the writes around it from the same base", async () => {
      const store = await open();
      const base = int64Max - 10n;
      await store.commitBatch([record({ requestId: "base", costNanos: base })], 1_000);
      const results = await store.commitBatch(
        [
          record({ requestId: "w1", costNanos: 4n }),
          record({ requestId: "big", costNanos: 7n }), // 4 + 7 > 10: refused
          record({ requestId: "w2", costNanos: 6n }), // 4 + 6 = 10: fits exactly
          record({ requestId: "w3", costNanos: 1n }), // nothing left
          record({ requestId: "big", costNanos: 7n }), // still refused: not a duplicate of a refused write
          record({ requestId: "w4", costNanos: 0n, outputTokens: 5n }),
        ],
        2_000,
      );
      expect(resultValue<RecordOutcome>(results[0]).totals.totalCostNanos).toBe(base + 4n);
      expect(errorOf(results[1])).toBeInstanceOf(TotalOverflowError);
      expect(errorOf(results[1]).message).toMatch(/total_cost_nanos/);
      expect(resultValue<RecordOutcome>(results[2]).totals).toMatchObject({ totalCostNanos: int64Max, recordCount: 3n });
      expect(errorOf(results[3])).toBeInstanceOf(TotalOverflowError);
      expect(errorOf(results[4])).toBeInstanceOf(TotalOverflowError);
      expect(resultValue<RecordOutcome>(results[5]).totals).toMatchObject({ totalCostNanos: int64Max, outputTokens: 5n, recordCount: 4n });
      expect(await store.getTotals("p")).toMatchObject({ totalCostNanos: int64Max, outputTokens: 5n, recordCount: 4n });
      expect((await ledgerOf(store, "p")).map(([id, , after]) => [id, after])).toEqual([
        ["base", base],
        ["w1", base + 4n],
        ["w2", int64Max],
        ["w4", int64Max],
      ]);
    });

    it("settles holds in a batch: each once, the reservations decremented by their sum, a hold placed earlier in the same batch included", async () => {
      const store = await open();
      await store.commitBatch([reserve("h1", 30n), reserve("h2", 50n), reserve("h3", 70n), reserve("q1", 5n, "q")], 1_000);
      const results = await store.commitBatch(
        [
          record({ requestId: "s1", costNanos: 25n, holdId: "h1" }),
          record({ requestId: "plain", costNanos: 1n }),
          record({ requestId: "s1-again", costNanos: 25n, holdId: "h1" }), // h1 was settled just before
          record({ requestId: "s2", costNanos: 60n, holdId: "h2" }),
          record({ requestId: "wrong-project", costNanos: 1n, holdId: "q1" }), // a hold of project q
          { kind: "release", projectId: "p", holdId: "h3" },
          reserve("h4", 40n),
          record({ requestId: "s4", costNanos: 10n, holdId: "h4" }),
          record({ requestId: "s3", costNanos: 1n, holdId: "h3" }), // released above
          record({ projectId: "q", requestId: "q-s1", costNanos: 2n, holdId: "q1" }),
        ],
        2_000,
      );
      expect(resultValue<RecordOutcome>(results[0])).toMatchObject({ settledHoldNanos: 30n, totals: { totalCostNanos: 25n } });
      expect(resultValue<RecordOutcome>(results[1])).toMatchObject({ settledHoldNanos: 0n, totals: { totalCostNanos: 26n } });
      expect(errorOf(results[2])).toBeInstanceOf(HoldNotActiveError);
      expect(resultValue<RecordOutcome>(results[3])).toMatchObject({ settledHoldNanos: 50n, totals: { totalCostNanos: 86n } });
      expect(errorOf(results[4])).toBeInstanceOf(HoldNotActiveError);
      expect(resultValue<ReserveOutcome>(results[6]).hold).toMatchObject({ holdId: "h4", amountNanos: 40n });
      expect(resultValue<RecordOutcome>(results[7])).toMatchObject({
        settledHoldNanos: 40n,
        totals: { totalCostNanos: 96n, recordCount: 4n },
      });
      expect(errorOf(results[8])).toBeInstanceOf(HoldNotActiveError);
      expect(resultValue<RecordOutcome>(results[9])).toMatchObject({ settledHoldNanos: 5n, totals: { totalCostNanos: 2n } });
      for (const id of ["h1", "h2", "h3", "h4", "q1"]) expect(await store.getHold(id)).toBeNull();
      const p = await store.getBudgetState("p", 2_000);
      expect([p.reservedNanos, p.activeHoldCount, p.totals.totalCostNanos, p.totals.recordCount]).toEqual([0n, 0n, 96n, 4n]);
      const q = await store.getBudgetState("q", 2_000);
      expect([q.reservedNanos, q.activeHoldCount, q.totals.totalCostNanos]).toEqual([0n, 0n, 2n]);
      expect(
        (await store.listCostRecords({ projectId: "p", startMs: null, endMs: null, after: null, limit: 10 })).map((r) => [
          r.requestId,
          r.holdId,
          r.totalCostNanosAfter,
        ]),
      ).toEqual([
        ["s1", "h1", 25n],
        ["plain", "", 26n],
        ["s2", "h2", 86n],
        ["s4", "h4", 96n],
      ]);
    });

    it("reports each threshold once across the projects of one batch, at the write that reached it", async () => {
      const store = await open();
      await store.commitBatch(
        [
          { kind: "setBudget", change: { projectId: "a", limitNanos: 100n, currency: null, alertThresholdsBps: [5000, 8000] } },
          {
            kind: "setBudget",
            change: { projectId: "b", limitNanos: 10n, currency: null, dailyLimitNanos: 20n, alertThresholdsBps: [5000] },
          },
        ],
        0,
      );
      const ops = Array.from({ length: 12 }, (_, i) =>
        record({ projectId: i % 2 === 0 ? "a" : "b", requestId: `r${i}`, costNanos: i % 2 === 0 ? 20n : 3n }),
      );
      const results = await store.commitBatch(ops, 1);
      const crossings = results.flatMap((r) =>
        resultValue<RecordOutcome>(r).crossings.map((c) => [c.projectId, c.window, c.thresholdBps, c.requestId, c.spentNanos]),
      );
      // a: 20 per write against 100 (50%, 80%, 100%); b: 3 per write against 10 lifetime and 20 a day (50%, 100%).
      expect(crossings).toEqual([
        ["b", "lifetime", 5000, "r3", 6n],
        ["a", "lifetime", 5000, "r4", 60n],
        ["a", "lifetime", 8000, "r6", 80n],
        ["b", "lifetime", 10_000, "r7", 12n],
        ["b", "day", 5000, "r7", 12n],
        ["a", "lifetime", 10_000, "r8", 100n],
      ]);
      // A later batch crosses nothing again.
      const again = await store.commitBatch(
        [record({ projectId: "a", requestId: "later", costNanos: 1n }), record({ projectId: "b", requestId: "later", costNanos: 1n })],
        2,
      );
      expect(again.flatMap((r) => resultValue<RecordOutcome>(r).crossings)).toEqual([]);
    });
  });
