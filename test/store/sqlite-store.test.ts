import { afterEach, describe, expect, it } from "vitest";
import { CurrencyLockedError, IdempotencyConflictError, TotalOverflowError } from "../../src/ledger/errors.ts";
import { int64Max } from "../../src/ledger/money.ts";
import type { LedgerStore } from "../../src/ledger/store.ts";
import type { CostEntry, RecordOutcome } from "../../src/ledger/types.ts";
import { MikroORM } from "@mikro-orm/sqlite";
import type Database from "better-sqlite3";
import { entities } from "../../src/store/entities.ts";
import { initORM, parseDatabaseUrl, type InitializedStore } from "../../src/store/orm.ts";
import { tempDatabaseUrl } from "../helpers.ts";

const entry = (over: Partial<CostEntry> = {}): CostEntry => ({
  projectId: "p",
  requestId: "r1",
  costNanos: 10n,
  inputTokens: 1n,
  outputTokens: 2n,
  agentId: "",
  model: "",
  ...over,
});

// In memory, writes run on the store's own connection; on a file, on the
// writer thread (src/store/sqlite-writer.ts). Same behaviour either way.
for (const where of ["memory", "file"] as const) describe(`SqliteLedgerStore (${where})`, () => {
  let opened: InitializedStore[] = [];
  const open = async (url = where === "memory" ? "sqlite::memory:" : tempDatabaseUrl()) => {
    const init = await initORM(url);
    opened.push(init);
    return init;
  };
  afterEach(async () => {
    for (const init of opened) await init.store.close().catch(() => undefined);
    opened = [];
  });

  it("applies the committed migrations, and they match the entities exactly", async () => {
    const { orm, applied } = await open();
    expect(applied).toEqual(["Migration20261127000000_initial", "Migration20261201000000_holds_windows_alerts"]);
    // A second database built straight from the entities by the schema
    // generator must come out identical to the migrated one: no drift.
    const fromEntities = await MikroORM.init({ dbName: ":memory:", entities, allowGlobalContext: true });
    try {
      await fromEntities.schema.create();
      const schemaOf = async (db: Database.Database) =>
        db.prepare("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND tbl_name NOT LIKE 'mikro_orm_%' ORDER BY name").all();
      const migrated = await schemaOf((await orm.em.getConnection().getNativeClient()) as Database.Database);
      expect(migrated.length).toBeGreaterThanOrEqual(11);
      expect(migrated).toEqual(await schemaOf(await fromEntities.em.getConnection().getNativeClient()));
    } finally {
      await fromEntities.close(true);
    }
  });

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
    expect(await store.getTotals("p")).toMatchObject({ totalCostNanos: 15n, inputTokens: 2n, outputTokens: 4n, recordCount: 2n });
  });

  it("answers a retry of a recorded request as a duplicate even when re-adding it would overflow", async () => {
    const { store } = await open();
    await store.commitBatch([{ kind: "record", entry: entry({ requestId: "max", costNanos: int64Max }) }], 1);
    const [retry] = await store.commitBatch([{ kind: "record", entry: entry({ requestId: "max", costNanos: int64Max }) }], 2);
    expect(retry).toMatchObject({ ok: true, value: { duplicate: true, totals: { totalCostNanos: int64Max } } });
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
    expect(await store.getBudget("q")).toEqual({ projectId: "q", limitNanos: 6n, currency: "EUR", configured: true, updatedAtMs: 8, dailyLimitNanos: 0n, monthlyLimitNanos: 0n, timeZone: "UTC", alertThresholdsBps: [] });
  });

  it("deletes old records for retention but never touches the lifetime totals", async () => {
    const { store } = await open();
    await store.commitBatch([{ kind: "record", entry: entry({ requestId: "old" }) }], 1_000);
    await store.commitBatch([{ kind: "record", entry: entry({ requestId: "new" }) }], 5_000);
    expect(await store.deleteRecordsBefore(2_000, 100)).toBe(1);
    expect(await store.getTotals("p")).toMatchObject({ totalCostNanos: 20n, recordCount: 2n });
  });

  it("persists across close and reopen of the same file", async () => {
    const url = tempDatabaseUrl();
    const first = await initORM(url);
    await first.store.commitBatch([{ kind: "record", entry: entry() }], 1);
    await first.store.close();
    const second = await open(url);
    expect(second.applied).toEqual([]); // already migrated
    expect(await second.store.getTotals("p")).toMatchObject({ totalCostNanos: 10n, recordCount: 1n });
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

  it.runIf(where === "file")("serves a file from one store at a time: a second one is refused until the first closes", async () => {
    const url = tempDatabaseUrl();
    const first = await initORM(url);
    const path = (parseDatabaseUrl(url) as { path: string }).path;
    await expect(initORM(url)).rejects.toThrow(new RegExp(`the SQLite database .*${path.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} is already served by another Tally process`));
    await first.store.commitBatch([{ kind: "record", entry: entry() }], 1);
    await first.store.close();
    const second = await open(url);
    expect(await second.store.getTotals("p")).toMatchObject({ totalCostNanos: 10n });
  });

  it("parses database URLs and rejects what it does not serve", () => {
    expect(parseDatabaseUrl("sqlite:./data/tally.db")).toEqual({ driver: "sqlite", path: "./data/tally.db" });
    expect(parseDatabaseUrl("sqlite::memory:")).toEqual({ driver: "sqlite", path: ":memory:" });
    expect(() => parseDatabaseUrl("sqlite:")).toThrow(/names no file/);
    expect(() => parseDatabaseUrl("mysql://x")).toThrow(/not understood/);
  });
});

export type { LedgerStore };
