// The SQLite writer thread (src/store/sqlite/writer.ts): a file database's
// writes run on their own thread and connection, reads on the main one.
import { afterEach, describe, expect, it } from "vitest";
import { IdempotencyConflictError } from "../../src/ledger/errors.ts";
import type { OpResult, WriteOp } from "../../src/ledger/store.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { StoreUnavailableError } from "../../src/ledger/errors.ts";
import type { CostEntry } from "../../src/ledger/types.ts";
import { initORM, parseDatabaseUrl } from "../../src/store/orm.ts";
import { sqliteDefaults } from "../../src/store/sqlite/connection.ts";
import { SqliteLedgerStore } from "../../src/store/sqlite/store.ts";
import { SqliteWriter, WriterError } from "../../src/store/sqlite/writer.ts";
import { tempDatabaseUrl } from "../helpers.ts";
import { entry as contractEntry } from "./store-contract.ts";

const entry = (requestId: string, over: Partial<CostEntry> = {}): CostEntry => contractEntry({ requestId, ...over });
const records = (from: number, count: number): WriteOp[] =>
  Array.from({ length: count }, (_, i) => ({ kind: "record", entry: entry(`r${from + i}`) }));

describe("SQLite writer thread", () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  });

  /** A migrated file database, a writer thread on it, and a store that reads
   * on the ORM's connection and writes through the thread. */
  const openWithWriter = async () => {
    const url = tempDatabaseUrl();
    const init = await initORM(url);
    cleanups.push(() => init.store.close());
    const native = (init.store as SqliteLedgerStore).native;
    const target = parseDatabaseUrl(url);
    if (target.driver !== "sqlite") throw new Error("a SQLite URL");
    const writer = await SqliteWriter.start(target.path, sqliteDefaults);
    const store = new SqliteLedgerStore(native, async () => undefined, writer);
    cleanups.push(() => store.close());
    return { store, writer, native };
  };

  it("commits on the thread's own connection, and a read right after the commit sees it", async () => {
    const { store, native } = await openWithWriter();
    const before = native.prepare("SELECT count(*) AS n FROM cost_records").pluck();
    for (let round = 0; round < 5; round++) {
      const results = await store.commitBatch(records(round * 10, 10), 1_000 + round);
      expect(results.every((r) => r.ok)).toBe(true);
      // No wait, no retry: the main connection reads what the thread committed.
      expect(await store.getTotals("p")).toMatchObject({
        totalCostNanos: BigInt(10 * 10 * (round + 1)),
        recordCount: BigInt(10 * (round + 1)),
      });
      expect(before.get()).toBe(10 * (round + 1));
    }
  });

  it("returns domain errors across the thread as the same classes, and values with bigints intact", async () => {
    const { store } = await openWithWriter();
    const results: OpResult[] = await store.commitBatch(
      [
        { kind: "record", entry: entry("a", { costNanos: 9_007_199_254_740_993n }) },
        { kind: "record", entry: entry("a", { costNanos: 1n }) },
      ],
      5,
    );
    expect(results[0]).toMatchObject({ ok: true, value: { duplicate: false, totals: { totalCostNanos: 9_007_199_254_740_993n } } });
    expect(results[1]?.ok).toBe(false);
    const error = (results[1] as { error: Error }).error;
    expect(error).toBeInstanceOf(IdempotencyConflictError);
    expect(error.name).toBe("IdempotencyConflictError");
    expect(error.message).toMatch(
      /request_id "a" was already recorded with a different payload \(costNanos: recorded 9007199254740993, now 1\)/,
    );
  });

  it("fails the writes in flight when the thread dies, commits each batch entirely or not at all, and starts a new thread", async () => {
    const { store, writer } = await openWithWriter();
    const uow = new UnitOfWork(store, { batchSizeMax: 256, queueDepthMax: 10_000 });
    cleanups.push(() => uow.close());
    // One big batch; the thread is stopped while it works on it.
    const writes = records(0, 256).map((op) =>
      uow.submit(op).then(
        () => "ok" as const,
        (error: Error) => error,
      ),
    );
    await new Promise((resolve) => setImmediate(resolve)); // the batch has been sent
    await writer.stopThread();
    // No event-loop turn came between sending the batch and the stop, so its
    // reply cannot have been read: every write of it fails.
    const outcomes = await Promise.all(writes);
    expect(outcomes).toHaveLength(256);
    for (const error of outcomes) {
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect((error as Error).message).toMatch(/writer thread stopped/);
    }
    // The transaction is in the file entirely (the stop came after COMMIT) or
    // not at all; never half of it.
    expect([0n, 256n]).toContain((await store.getTotals("p")).recordCount);
    // The next write starts a new thread; retrying the failed ones with the same
    // request_id counts each exactly once.
    const retried = await store.commitBatch(records(0, 256), 2);
    expect(retried.every((r) => r.ok)).toBe(true);
    expect(await store.getTotals("p")).toMatchObject({ recordCount: 256n, totalCostNanos: 2_560n });
  });

  it("close waits for the batch in flight, then refuses new writes", async () => {
    const { store, writer } = await openWithWriter();
    const pending = store.commitBatch(records(0, 100), 1);
    await writer.close();
    expect((await pending).every((r) => r.ok)).toBe(true);
    expect(await store.getTotals("p")).toMatchObject({ recordCount: 100n });
    await expect(store.commitBatch(records(100, 1), 2)).rejects.toBeInstanceOf(WriterError);
  });

  it("refuses to start on a file that does not exist", async () => {
    await expect(SqliteWriter.start("/nonexistent-dir/tally.db", sqliteDefaults)).rejects.toThrow(
      /could not open \/nonexistent-dir\/tally.db/,
    );
  });
});
