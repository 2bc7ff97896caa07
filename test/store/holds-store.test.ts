// The SQLite store's holds, windows and alert state, below the ledger: what
// one batch transaction guarantees, the hold sweeper, and the upgrade of a
// database that already holds v1 data.
import { MikroORM } from "@mikro-orm/sqlite";
import { Migrator } from "@mikro-orm/migrations";
import { afterEach, describe, expect, it } from "vitest";
import { HoldNotActiveError } from "../../src/ledger/errors.ts";
import { HoldSweeper } from "../../src/ledger/holds.ts";
import { reserveKeyKeepMs } from "../../src/limits.ts";
import type { OpResult, ReserveOutcome, WriteOp } from "../../src/ledger/store.ts";
import type { CostEntry, RecordOutcome } from "../../src/ledger/types.ts";
import { entities } from "../../src/store/entities.ts";
import { Migration20261127000000_initial } from "../../src/store/migrations/sqlite/Migration20261127000000_initial.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { tempDatabaseUrl } from "../helpers.ts";

const entry = (over: Partial<CostEntry> = {}): CostEntry => ({
  projectId: "p",
  requestId: "r",
  costNanos: 1n,
  inputTokens: 0n,
  outputTokens: 0n,
  agentId: "",
  model: "",
  ...over,
});
const reserve = (holdId: string, estimatedCostNanos: bigint, ttlMs = 60_000, projectId = "p"): WriteOp => ({
  kind: "reserve",
  request: { projectId, estimatedCostNanos, holdId, ttlMs, requestId: "" },
});
const resultValue = <T>(result: OpResult | undefined): T => {
  if (result === undefined || !result.ok) throw new Error(`expected ok, got ${result === undefined ? "nothing" : result.error.message}`);
  return result.value as T;
};

for (const kind of databaseKinds)
  describe(`store on ${kind}: holds, windows, alerts`, () => {
    const databases = new TestDatabases(kind, tempDatabaseUrl);
    let opened: InitializedStore[] = [];
    const open = async (url?: string) => {
      const init = await initORM(url ?? (await databases.scratch()));
      opened.push(init);
      return init.store;
    };
    afterEach(async () => {
      for (const init of opened) await init.store.close().catch(() => undefined);
      opened = [];
      await databases.cleanup();
    });

    it("decides each reserve in a batch against the holds placed before it in the same transaction", async () => {
      const store = await open();
      await store.commitBatch([{ kind: "setBudget", change: { projectId: "p", limitNanos: 30n, currency: null } }], 1_000);
      const results = await store.commitBatch(
        ["a", "b", "c", "d", "e"].map((id) => reserve(id, 10n)),
        2_000,
      );
      expect(results.map((r) => resultValue<ReserveOutcome>(r).decision.allowed)).toEqual([true, true, true, false, false]);
      expect(results.map((r) => resultValue<ReserveOutcome>(r).hold?.holdId ?? null)).toEqual(["a", "b", "c", null, null]);
      expect(resultValue<ReserveOutcome>(results[3]).decision.reason).toBe("fully_reserved");
      const state = await store.getBudgetState("p", 2_000);
      expect([state.reservedNanos, state.activeHoldCount]).toEqual([30n, 3n]);
    });

    it("settles in the same transaction as the increment: a failing settle leaves the hold in place", async () => {
      const store = await open();
      await store.commitBatch([reserve("h1", 10n, 1_000)], 0);
      const [late, ok] = await store.commitBatch([{ kind: "record", entry: entry({ requestId: "late", holdId: "h1" }) }], 1_000);
      expect(late).toMatchObject({ ok: false });
      expect((late as { error: Error }).error).toBeInstanceOf(HoldNotActiveError);
      expect(ok).toBeUndefined();
      expect(await store.getTotals("p")).toMatchObject({ totalCostNanos: 0n, recordCount: 0n });
      // Expired but not swept: the row is still there, and counts for nothing.
      expect(await store.getHold("h1")).toMatchObject({ amountNanos: 10n, expiresAtMs: 1_000 });
      expect((await store.getBudgetState("p", 1_000)).reservedNanos).toBe(0n);
      expect((await store.getBudgetState("p", 999)).reservedNanos).toBe(10n);
    });

    it("sweeps reservation keys an hour after their hold expired, in bounded transactions", async () => {
      const store = await open();
      const keyed = (i: number, holdId = `kh${i}`): WriteOp => ({
        kind: "reserve",
        request: { projectId: "p", estimatedCostNanos: 1n, holdId, ttlMs: 1_000, requestId: `key-${i}` },
      });
      await store.commitBatch(
        Array.from({ length: 12 }, (_, i) => keyed(i)),
        0,
      );
      let nowMs = 1_000 + reserveKeyKeepMs; // exactly the keep time after expiry: still kept
      const sweeper = new HoldSweeper(store, 5, () => nowMs);
      await sweeper.sweep();
      const retry = keyed(0, "new");
      expect((await store.commitBatch([retry], nowMs))[0]).toMatchObject({ ok: false, error: { name: "ReservationEndedError" } });
      nowMs += 1;
      await sweeper.sweep(); // 3 transactions of at most 5
      const [again] = await store.commitBatch([retry], nowMs);
      expect(again).toMatchObject({ ok: true, value: { hold: { holdId: "new" } } });
    });

    it("sweeps expired holds in bounded transactions and keeps the reserved totals exact", async () => {
      const store = await open();
      const ops = Array.from({ length: 25 }, (_, i) => reserve(`h${i}`, BigInt(i + 1), i < 20 ? 1_000 : 60_000, i % 2 === 0 ? "p" : "q"));
      await store.commitBatch(ops, 0);
      const before = [(await store.getBudgetState("p", 5_000)).reservedNanos, (await store.getBudgetState("q", 5_000)).reservedNanos];
      expect(await store.deleteExpiredHolds(5_000, 7)).toBe(7);
      const sweeper = new HoldSweeper(store, 7, () => 5_000);
      expect(await sweeper.sweep()).toBe(13);
      expect(await sweeper.sweep()).toBe(0);
      expect(await store.getHold("h0")).toBeNull();
      expect(await store.getHold("h24")).not.toBeNull();
      // Active holds are what they were; the aggregate now equals them without subtraction.
      const after = [(await store.getBudgetState("p", 5_000)).reservedNanos, (await store.getBudgetState("q", 5_000)).reservedNanos];
      expect(after).toEqual(before);
      expect(after).toEqual([21n + 23n + 25n, 22n + 24n]);
      const native = (opened[0] as InitializedStore).orm.em.getConnection();
      const rows = await native.execute("SELECT project_id, reserved_nanos, hold_count FROM project_reservations ORDER BY project_id");
      expect(rows.map((r: Record<string, unknown>) => [r.project_id, Number(r.reserved_nanos), Number(r.hold_count)])).toEqual([
        ["p", 69, 3],
        ["q", 46, 2],
      ]);
    });

    it("reports a threshold crossing to exactly one write of a batch", async () => {
      const store = await open();
      await store.commitBatch(
        [{ kind: "setBudget", change: { projectId: "p", limitNanos: 100n, currency: null, alertThresholdsBps: [5000] } }],
        0,
      );
      const results = await store.commitBatch(
        Array.from({ length: 20 }, (_, i) => ({ kind: "record" as const, entry: entry({ requestId: `r${i}`, costNanos: 5n }) })),
        1,
      );
      const crossings = results.flatMap((r) => resultValue<RecordOutcome>(r).crossings);
      expect(crossings.map((c) => [c.thresholdBps, c.requestId, c.spentNanos])).toEqual([
        [5000, "r9", 50n],
        [10_000, "r19", 100n],
      ]);
    });

    it("keeps day and month totals per local calendar period, in the totals row", async () => {
      const store = await open();
      await store.commitBatch(
        [{ kind: "setBudget", change: { projectId: "p", limitNanos: 0n, currency: null, timeZone: "Asia/Tokyo" } }],
        0,
      );
      // 14:59:59 UTC is 23:59:59 in Tokyo; 15:00 UTC is the next local day (and month).
      await store.commitBatch([{ kind: "record", entry: entry({ requestId: "a", costNanos: 3n }) }], Date.parse("2026-11-30T14:00:00Z"));
      await store.commitBatch([{ kind: "record", entry: entry({ requestId: "b", costNanos: 2n }) }], Date.parse("2026-11-30T14:59:59Z"));
      const november = await store.getBudgetState("p", Date.parse("2026-11-30T14:59:59Z"));
      expect([
        november.day.period,
        november.day.totalCostNanos,
        november.day.recordCount,
        november.month.period,
        november.month.totalCostNanos,
      ]).toEqual(["2026-11-30", 5n, 2n, "2026-11", 5n]);
      // A new local day has spent nothing before its first record...
      const midnight = await store.getBudgetState("p", Date.parse("2026-11-30T15:00:00Z"));
      expect([midnight.day.period, midnight.day.totalCostNanos, midnight.month.period, midnight.month.totalCostNanos]).toEqual([
        "2026-12-01",
        0n,
        "2026-12",
        0n,
      ]);
      // ...and its first record starts the period afresh.
      await store.commitBatch([{ kind: "record", entry: entry({ requestId: "c", costNanos: 4n }) }], Date.parse("2026-11-30T15:00:00Z"));
      const december = await store.getBudgetState("p", Date.parse("2026-11-30T16:00:00Z"));
      expect([
        december.day.period,
        december.day.totalCostNanos,
        december.day.recordCount,
        december.month.period,
        december.month.totalCostNanos,
      ]).toEqual(["2026-12-01", 4n, 1n, "2026-12", 4n]);
      expect(december.totals.totalCostNanos).toBe(9n);
      // A record stamped earlier (the clock stepped back) is added to the current period, never lost.
      await store.commitBatch([{ kind: "record", entry: entry({ requestId: "d", costNanos: 1n }) }], Date.parse("2026-11-30T14:30:00Z"));
      expect((await store.getBudgetState("p", Date.parse("2026-11-30T16:00:00Z"))).day.totalCostNanos).toBe(5n);
    });

    // SQLite's upgrade path; PostgreSQL's is in postgres-store.test.ts.
    it.skipIf(kind !== "sqlite")("upgrades a v1 database with records in place: nothing lost, new columns defaulted", async () => {
      const url = await databases.durable();
      const path = url.slice("sqlite:".length);
      const v1 = await MikroORM.init({
        dbName: path,
        entities,
        extensions: [Migrator],
        migrations: { migrationsList: [Migration20261127000000_initial], snapshot: false, silent: true },
      });
      await v1.migrator.up();
      const db = await v1.em.getConnection().getNativeClient();
      db.prepare("INSERT INTO project_totals VALUES ('p', 12, 1, 2, 1, 5, 5)").run();
      db.prepare("INSERT INTO project_budgets VALUES ('p', 100, 'EUR', 5, 5)").run();
      db.prepare(
        "INSERT INTO cost_records (project_id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, recorded_at_ms, total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after) VALUES ('p', 'old', 12, 1, 2, '', '', 5, 12, 1, 2, 1)",
      ).run();
      await v1.close(true);

      const store = await open(url);
      expect(opened[0]?.applied).toEqual([
        "Migration20261201000000_holds_windows_alerts",
        "Migration20261205000000_reserve_keys",
        "Migration20261205100000_project_archives",
        "Migration20261205200000_model_prices",
        "Migration20261205210000_record_pricing",
        "Migration20261205300000_budget_parents",
        "Migration20261205400000_agent_caps",
      ]);
      expect(await store.getBudget("p")).toMatchObject({
        limitNanos: 100n,
        currency: "EUR",
        dailyLimitNanos: 0n,
        timeZone: "UTC",
        alertThresholdsBps: [],
      });
      expect(await store.listCostRecords({ projectId: "p", startMs: null, endMs: null, after: null, limit: 10 })).toMatchObject([
        { requestId: "old", costNanos: 12n, holdId: "" },
      ]);
      // The v1 record's retry is still a duplicate.
      const [retry] = await store.commitBatch(
        [{ kind: "record", entry: entry({ requestId: "old", costNanos: 12n, inputTokens: 1n, outputTokens: 2n }) }],
        10,
      );
      expect(resultValue<RecordOutcome>(retry)).toMatchObject({ duplicate: true, totals: { totalCostNanos: 12n } });
    });
  });
