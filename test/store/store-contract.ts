// What every LedgerStore does, on every database: the SQLite store in memory
// (writes in-thread), on a file (writes on the writer thread) and the
// PostgreSQL store run the same cases (sqlite-store.test.ts,
// postgres-store.test.ts).
import { describe, expect, it } from "vitest";
import { CurrencyLockedError, IdempotencyConflictError, ReservationEndedError, TotalOverflowError } from "../../src/ledger/errors.ts";
import { int64Max } from "../../src/ledger/money.ts";
import type { OpResult, ReserveOutcome, WriteOp } from "../../src/ledger/store.ts";
import type { CostEntry, HoldRequest, RecordOutcome } from "../../src/ledger/types.ts";
import type { InitializedStore } from "../../src/store/orm.ts";

export const entry = (over: Partial<CostEntry> = {}): CostEntry => ({
  projectId: "p",
  requestId: "r1",
  costNanos: 10n,
  inputTokens: 1n,
  outputTokens: 2n,
  agentId: "",
  model: "",
  ...over,
});

/** Registers the shared cases in the calling describe; `open` gives a fresh, empty, migrated store. */
export function storeContract(open: () => Promise<InitializedStore>): void {
  it("commits each op of a batch on its own: failures leave nothing, the rest commits", async () => {
    const { store } = await open();
    const results = await store.commitBatch(
      [
        { kind: "record", entry: entry() },
        { kind: "record", entry: entry() }, // same key, same payload: duplicate
        { kind: "record", entry: entry({ costNanos: 11n }) }, // same key, other payload
        { kind: "record", entry: entry({ requestId: "big", costNanos: int64Max }) }, // overflow
        { kind: "setBudget", change: { projectId: "p", limitNanos: 100n, currency: "EUR" } }, // currency locked
        { kind: "record", entry: entry({ requestId: "r2", costNanos: 5n }) },
      ],
      1_000,
    );
    expect(results.map((r) => r.ok)).toEqual([true, true, false, false, false, true]);
    expect((results[1] as { value: RecordOutcome }).value).toMatchObject({
      duplicate: true,
      totals: { totalCostNanos: 10n, recordCount: 1n },
    });
    expect((results[2] as { error: Error }).error).toBeInstanceOf(IdempotencyConflictError);
    expect((results[3] as { error: Error }).error).toBeInstanceOf(TotalOverflowError);
    expect((results[4] as { error: Error }).error).toBeInstanceOf(CurrencyLockedError);
    expect((results[5] as { value: RecordOutcome }).value).toMatchObject({
      duplicate: false,
      totals: { totalCostNanos: 15n, recordCount: 2n, updatedAtMs: 1_000 },
    });
    expect(await store.getTotals("p")).toMatchObject({ totalCostNanos: 15n, inputTokens: 2n, outputTokens: 4n, recordCount: 2n });
    expect(await store.getBudgetAndTotals("p")).toMatchObject({
      budget: { configured: false, currency: "USD" },
      totals: { totalCostNanos: 15n },
    });
  });

  it("answers a retry of a recorded request as a duplicate even when re-adding it would overflow", async () => {
    const { store } = await open();
    await store.commitBatch([{ kind: "record", entry: entry({ requestId: "max", costNanos: int64Max }) }], 1);
    const [retry] = await store.commitBatch([{ kind: "record", entry: entry({ requestId: "max", costNanos: int64Max }) }], 2);
    expect(retry).toMatchObject({ ok: true, value: { duplicate: true, totals: { totalCostNanos: int64Max, updatedAtMs: 1 } } });
  });

  it("reports which quantity would overflow", async () => {
    const { store } = await open();
    await store.commitBatch([{ kind: "record", entry: entry({ requestId: "a", costNanos: 0n, outputTokens: int64Max }) }], 1);
    const [result] = await store.commitBatch([{ kind: "record", entry: entry({ requestId: "b", costNanos: 0n, outputTokens: 1n }) }], 2);
    expect(result).toMatchObject({ ok: false });
    expect((result as { error: Error }).error.message).toMatch(/output_tokens/);
  });

  it("keeps the currency of a project that never recorded, and changes it before the first record", async () => {
    const { store } = await open();
    expect(await store.getBudget("q")).toMatchObject({ limitNanos: 0n, currency: "USD", configured: false, updatedAtMs: null });
    await store.commitBatch([{ kind: "setBudget", change: { projectId: "q", limitNanos: 5n, currency: "EUR" } }], 7);
    await store.commitBatch([{ kind: "setBudget", change: { projectId: "q", limitNanos: 6n, currency: null } }], 8);
    expect(await store.getBudget("q")).toMatchObject({ projectId: "q", limitNanos: 6n, currency: "EUR", configured: true, updatedAtMs: 8 });
    await store.commitBatch([{ kind: "record", entry: entry({ projectId: "q" }) }], 9);
    const [same, other] = await store.commitBatch(
      [
        { kind: "setBudget", change: { projectId: "q", limitNanos: 7n, currency: "EUR" } },
        { kind: "setBudget", change: { projectId: "q", limitNanos: 8n, currency: "USD" } },
      ],
      10,
    );
    expect(same).toMatchObject({ ok: true, value: { limitNanos: 7n, currency: "EUR" } });
    expect((other as { error: Error }).error.message).toMatch(/already recorded costs in EUR; its currency cannot change to USD/);
  });

  it("deletes old records for retention but never touches the lifetime totals", async () => {
    const { store } = await open();
    await store.commitBatch([{ kind: "record", entry: entry({ requestId: "old" }) }], 1_000);
    await store.commitBatch([{ kind: "record", entry: entry({ requestId: "new" }) }], 5_000);
    expect(await store.deleteRecordsBefore(2_000, 100)).toBe(1);
    expect(await store.getTotals("p")).toMatchObject({ totalCostNanos: 20n, recordCount: 2n });
  });

  it("answers every read after an acknowledged write with that write in it, and counts holds by the clock", async () => {
    const { store } = await open();
    const state = (nowMs: number) => store.getBudgetState("c", nowMs);
    expect((await state(1_000)).totals.totalCostNanos).toBe(0n);
    expect((await state(1_001)).totals.totalCostNanos).toBe(0n); // read again, nothing written since
    await store.commitBatch([{ kind: "record", entry: entry({ projectId: "c", requestId: "c1", costNanos: 5n }) }], 1_002);
    expect((await state(1_003)).totals).toMatchObject({ totalCostNanos: 5n, recordCount: 1n });
    await store.commitBatch([{ kind: "setBudget", change: { projectId: "c", limitNanos: 50n, currency: null } }], 1_004);
    expect((await state(1_005)).budget).toMatchObject({ limitNanos: 50n, configured: true });
    await store.commitBatch(
      [{ kind: "reserve", request: { projectId: "c", estimatedCostNanos: 7n, holdId: "h1", ttlMs: 1_000, requestId: "" } }],
      1_006,
    );
    expect(await state(1_007)).toMatchObject({ reservedNanos: 7n, activeHoldCount: 1n });
    // No write in between: the hold stops counting when it expires.
    expect(await state(2_006)).toMatchObject({ reservedNanos: 0n, activeHoldCount: 0n });
    expect((await state(2_007)).totals.totalCostNanos).toBe(5n);
  });

  describe("reservations with a request_id", () => {
    const reserve = (over: Partial<HoldRequest> = {}): WriteOp => ({
      kind: "reserve",
      request: { projectId: "k", estimatedCostNanos: 30n, holdId: `h-${Math.random()}`, ttlMs: 10_000, requestId: "rq1", ...over },
    });
    const ok = (result: OpResult | undefined): ReserveOutcome => {
      if (result === undefined || !result.ok)
        throw new Error(`expected ok, got ${result?.ok === false ? result.error.message : "nothing"}`);
      return result.value as ReserveOutcome;
    };
    const failed = (result: OpResult | undefined): Error => {
      if (result === undefined || result.ok) throw new Error("expected a failed op");
      return result.error;
    };
    const budget = (limitNanos: bigint): WriteOp => ({ kind: "setBudget", change: { projectId: "k", limitNanos, currency: null } });

    it("answers a retry with the first hold and decision while it is active, reserving once", async () => {
      const { store } = await open();
      await store.commitBatch([budget(100n)], 1_000);
      const first = ok((await store.commitBatch([reserve({ holdId: "h1" })], 1_000))[0]);
      expect(first.hold).toMatchObject({ holdId: "h1", amountNanos: 30n, expiresAtMs: 11_000 });
      // Spend moves between the two calls; the retry still gets the answer given then.
      await store.commitBatch([{ kind: "record", entry: entry({ projectId: "k", requestId: "spend", costNanos: 60n }) }], 2_000);
      const [retry, sameBatch] = await store.commitBatch([reserve({ holdId: "h2" }), reserve({ holdId: "h3" })], 3_000);
      for (const replay of [ok(retry), ok(sameBatch)]) {
        expect(replay.hold).toEqual(first.hold);
        expect(replay.duplicate).toBe(true);
        expect(replay.decision).toEqual(first.decision);
        expect(replay.state.totals.totalCostNanos).toBe(60n); // the state is today's
      }
      expect(await store.getBudgetState("k", 3_000)).toMatchObject({ reservedNanos: 30n, activeHoldCount: 1n });
      expect(await store.getHold("h2")).toBeNull();
    });

    it("refuses a retry with another estimate or TTL, and one after its hold ended", async () => {
      const { store } = await open();
      ok((await store.commitBatch([reserve({ holdId: "h1" }), reserve({ holdId: "e1", requestId: "rq-exp", ttlMs: 1_000 })], 1_000))[0]);
      const [estimate, ttl] = await store.commitBatch([reserve({ estimatedCostNanos: 31n }), reserve({ ttlMs: 20_000 })], 2_000);
      expect(failed(estimate)).toBeInstanceOf(IdempotencyConflictError);
      expect(failed(estimate).message).toContain("estimated_cost_nanos: reserved 30, now 31");
      expect(failed(ttl).message).toContain("hold_ttl: reserved 10000 ms, now 20000 ms");
      expect(failed((await store.commitBatch([{ kind: "release", projectId: "k", holdId: "h1" }, reserve()], 3_000))[1])).toBeInstanceOf(
        ReservationEndedError,
      );
      const expired = failed((await store.commitBatch([reserve({ requestId: "rq-exp", ttlMs: 1_000 })], 3_000))[0]);
      expect(expired).toBeInstanceOf(ReservationEndedError);
      expect(expired.message).toContain('hold "e1"');
      expect(expired.message).toContain("expired at 1970-01-01T00:00:02.000Z");
      expect(await store.getBudgetState("k", 3_000)).toMatchObject({ reservedNanos: 0n, activeHoldCount: 0n });
    });

    it("keeps no key for a refused reservation, and keys are per project", async () => {
      const { store } = await open();
      await store.commitBatch([budget(10n)], 1_000);
      expect(ok((await store.commitBatch([reserve()], 1_000))[0]).hold).toBeNull();
      await store.commitBatch([budget(100n)], 1_001);
      expect(ok((await store.commitBatch([reserve({ holdId: "after-raise" })], 1_002))[0]).hold?.holdId).toBe("after-raise");
      const other = ok((await store.commitBatch([reserve({ projectId: "k2", holdId: "other" })], 1_003))[0]);
      expect(other.hold?.holdId).toBe("other");
    });

    it("forgets keys whose hold expired before the cut-off, a bounded number at a time", async () => {
      const { store } = await open();
      await store.commitBatch(
        [
          reserve({ requestId: "a", holdId: "ha", ttlMs: 1_000 }),
          reserve({ requestId: "b", holdId: "hb", ttlMs: 1_000 }),
          reserve({ requestId: "c", holdId: "hc", ttlMs: 5_000 }),
        ],
        1_000,
      );
      expect(await store.deleteReserveKeysBefore(2_001, 1)).toBe(1);
      expect(await store.deleteReserveKeysBefore(2_001, 10)).toBe(1);
      expect(await store.deleteReserveKeysBefore(2_001, 10)).toBe(0);
      // Forgotten: a retry of "a" is a new reservation; "c" is still known.
      expect(ok((await store.commitBatch([reserve({ requestId: "a", holdId: "ha2", ttlMs: 1_000 })], 3_000))[0]).hold?.holdId).toBe("ha2");
      expect(ok((await store.commitBatch([reserve({ requestId: "c", holdId: "hc2", ttlMs: 5_000 })], 3_000))[0]).hold?.holdId).toBe("hc");
    });
  });
}
