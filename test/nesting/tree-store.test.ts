// Trees of budgets at the store port, on both databases: holds that expire
// below a parent are swept off every level; a batch mixing writes to several
// levels of one tree is exact; a re-parenting in the same batch as records
// moves what those records added.
import { afterEach, describe, expect, it } from "vitest";
import type { OpResult, ReserveOutcome, WriteOp } from "../../src/ledger/store.ts";
import type { CostEntry } from "../../src/ledger/types.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { tempDatabaseUrl } from "../helpers.ts";

const budget = (projectId: string, limitNanos: bigint, parentId: string | null = null): WriteOp => ({
  kind: "setBudget",
  change: { projectId, limitNanos, currency: null, parentId },
});
const record = (projectId: string, requestId: string, costNanos: bigint): WriteOp => ({
  kind: "record",
  entry: { projectId, requestId, costNanos, inputTokens: 1n, outputTokens: 1n, agentId: "", model: "" } satisfies CostEntry,
});
const ok = <T>(result: OpResult | undefined): T => {
  if (result === undefined || !result.ok) throw new Error(`expected ok, got ${result === undefined ? "nothing" : result.error.message}`);
  return result.value as T;
};

for (const kind of databaseKinds)
  describe(`tree of budgets at the store on ${kind}`, () => {
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

    it("sweeps a descendant's expired hold off every level", async () => {
      const store = await open();
      const nowMs = Date.UTC(2026, 11, 5, 12);
      for (const r of await store.commitBatch([budget("org", 10n), budget("team", 0n, "org"), budget("leaf", 0n, "team")], nowMs)) ok(r);
      const reserved = ok<ReserveOutcome>(
        (
          await store.commitBatch(
            [{ kind: "reserve", request: { projectId: "leaf", estimatedCostNanos: 4n, holdId: "h1", ttlMs: 1_000, requestId: "" } }],
            nowMs,
          )
        )[0],
      );
      expect(reserved.hold?.holdId).toBe("h1");
      expect((await store.getBudgetState("org", nowMs)).reservedNanos).toBe(4n);
      // Expired but not swept: the leaf stops counting it at once; its
      // ancestors until the sweep (conservative, decision 0013).
      expect((await store.getBudgetState("leaf", nowMs + 2_000)).reservedNanos).toBe(0n);
      expect((await store.getBudgetState("org", nowMs + 2_000)).reservedNanos).toBe(4n);
      expect(await store.deleteExpiredHolds(nowMs + 2_000, 10)).toBe(1);
      for (const id of ["leaf", "team", "org"])
        expect([
          id,
          (await store.getBudgetState(id, nowMs)).reservedNanos,
          (await store.getBudgetState(id, nowMs)).activeHoldCount,
        ]).toEqual([id, 0n, 0n]);
    });

    it("applies one batch of records at several levels, a re-parenting between them, exactly", async () => {
      const store = await open();
      const nowMs = Date.UTC(2026, 11, 5, 12);
      const setup = [budget("org", 0n), budget("a", 0n, "org"), budget("b", 0n, "org"), budget("x", 0n, "a")];
      for (const r of await store.commitBatch(setup, nowMs)) ok(r);
      const results = await store.commitBatch(
        [
          record("x", "1", 5n),
          record("a", "2", 1n),
          record("org", "3", 2n),
          budget("x", 0n, "b"),
          record("x", "4", 3n),
          record("b", "5", 7n),
        ],
        nowMs,
      );
      for (const r of results) ok(r);
      const totals = async (id: string) => (await store.getTotals(id)).totalCostNanos;
      expect([await totals("x"), await totals("a"), await totals("b"), await totals("org")]).toEqual([8n, 1n, 15n, 18n]);
      expect((await store.getOwnTotals("org")).totalCostNanos).toBe(2n);
      expect((await store.getOwnTotals("b")).totalCostNanos).toBe(7n);
      expect((await store.getBreakdown("org", "child", 10)).entries.map((e) => [e.key, e.totalCostNanos])).toEqual([
        ["b", 15n],
        ["", 2n],
        ["a", 1n],
      ]);
      const day = await store.getBudgetState("b", nowMs);
      expect(day.day.totalCostNanos).toBe(15n);
    });
  });
