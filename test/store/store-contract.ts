// What every LedgerStore does, on every database: the SQLite store in memory
// (writes in-thread), on a file (writes on the writer thread) and the
// PostgreSQL store run the same cases (sqlite-store.test.ts,
// postgres-store.test.ts).
import { expect, it } from "vitest";
import { CurrencyLockedError, IdempotencyConflictError, TotalOverflowError } from "../../src/ledger/errors.ts";
import { int64Max } from "../../src/ledger/money.ts";
import type { CostEntry, RecordOutcome } from "../../src/ledger/types.ts";
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
    expect((results[1] as { value: RecordOutcome }).value).toMatchObject({ duplicate: true, totals: { totalCostNanos: 10n, recordCount: 1n } });
    expect((results[2] as { error: Error }).error).toBeInstanceOf(IdempotencyConflictError);
    expect((results[3] as { error: Error }).error).toBeInstanceOf(TotalOverflowError);
    expect((results[4] as { error: Error }).error).toBeInstanceOf(CurrencyLockedError);
    expect((results[5] as { value: RecordOutcome }).value).toMatchObject({ duplicate: false, totals: { totalCostNanos: 15n, recordCount: 2n, updatedAtMs: 1_000 } });
    expect(await store.getTotals("p")).toMatchObject({ totalCostNanos: 15n, inputTokens: 2n, outputTokens: 4n, recordCount: 2n });
    expect(await store.getBudgetAndTotals("p")).toMatchObject({ budget: { configured: false, currency: "USD" }, totals: { totalCostNanos: 15n } });
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
    await store.commitBatch([{ kind: "reserve", request: { projectId: "c", estimatedCostNanos: 7n, holdId: "h1", ttlMs: 1_000 } }], 1_006);
    expect(await state(1_007)).toMatchObject({ reservedNanos: 7n, activeHoldCount: 1n });
    // No write in between: the hold stops counting when it expires.
    expect(await state(2_006)).toMatchObject({ reservedNanos: 0n, activeHoldCount: 0n });
    expect((await state(2_007)).totals.totalCostNanos).toBe(5n);
  });
}
