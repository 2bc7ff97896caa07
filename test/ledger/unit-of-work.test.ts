import { afterEach, describe, expect, it } from "vitest";
import { ClosedError, DeadlinePassedError, QueueFullError, StoreUnavailableError } from "../../src/ledger/errors.ts";
import type { LedgerStore, OpResult, WriteOp } from "../../src/ledger/store.ts";
import type { CostEntry } from "../../src/ledger/types.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";

const record = (requestId: string, costNanos = 1n) => ({
  kind: "record" as const,
  entry: { projectId: "p", requestId, costNanos, inputTokens: 0n, outputTokens: 0n, agentId: "", model: "" } satisfies CostEntry,
});

/** The real SQLite store, with a switch that holds commits until released and
 * a record of every batch size, so tests can build a queue deterministically. */
class GatedStore implements LedgerStore {
  batches: number[] = [];
  failNext = false;
  #gate: Promise<void> | null = null;
  #open: (() => void) | null = null;
  readonly inner: LedgerStore;
  constructor(inner: LedgerStore) {
    this.inner = inner;
  }
  hold(): void {
    this.#gate = new Promise((resolve) => (this.#open = resolve));
  }
  release(): void {
    this.#open?.();
    this.#gate = null;
  }
  async commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]> {
    this.batches.push(ops.length);
    if (this.#gate) await this.#gate;
    if (this.failNext) {
      this.failNext = false;
      throw new Error("disk I/O error");
    }
    return this.inner.commitBatch(ops, nowMs);
  }
  getTotals = (id: string) => this.inner.getTotals(id);
  get treesStored() {
    return this.inner.treesStored;
  }
  getChainStates = (id: string, nowMs: number) => this.inner.getChainStates(id, nowMs);
  getDecisionLevels = (id: string, agentId: string, nowMs: number) => this.inner.getDecisionLevels(id, agentId, nowMs);
  getOwnTotals = (id: string) => this.inner.getOwnTotals(id);
  getBudget = (id: string) => this.inner.getBudget(id);
  getBudgetAndTotals = (id: string) => this.inner.getBudgetAndTotals(id);
  deleteRecordsBefore = (before: number, max: number) => this.inner.deleteRecordsBefore(before, max);
  listProjects: LedgerStore["listProjects"] = (query, nowMs) => this.inner.listProjects(query, nowMs);
  spendByCurrency = () => this.inner.spendByCurrency();
  reservedByCurrency: LedgerStore["reservedByCurrency"] = (nowMs) => this.inner.reservedByCurrency(nowMs);
  getBudgetState: LedgerStore["getBudgetState"] = (id, nowMs) => this.inner.getBudgetState(id, nowMs);
  getBreakdown: LedgerStore["getBreakdown"] = (id, dimension, max) => this.inner.getBreakdown(id, dimension, max);
  listCostRecords: LedgerStore["listCostRecords"] = (query) => this.inner.listCostRecords(query);
  getHold: LedgerStore["getHold"] = (holdId) => this.inner.getHold(holdId);
  deleteExpiredHolds: LedgerStore["deleteExpiredHolds"] = (nowMs, max) => this.inner.deleteExpiredHolds(nowMs, max);
  deleteReserveKeysBefore: LedgerStore["deleteReserveKeysBefore"] = (beforeMs, max) => this.inner.deleteReserveKeysBefore(beforeMs, max);
  close = () => this.inner.close();
}

describe("UnitOfWork", () => {
  let init: InitializedStore | undefined;
  const gated = async () => {
    init = await initORM("sqlite::memory:");
    return new GatedStore(init.store);
  };
  afterEach(async () => {
    await init?.store.close();
    init = undefined;
  });

  it("commits concurrent writes together in one batch and answers each after the commit", async () => {
    const store = await gated();
    const uow = new UnitOfWork(store, { batchSizeMax: 256, queueDepthMax: 1000 });
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => uow.submit(record(`r${i}`))));
    expect(store.batches).toEqual([100]);
    expect(results.at(-1)?.totals.totalCostNanos).toBe(100n);
    // Post-state of each write: record i saw exactly i+1 records.
    results.forEach((r, i) => {
      expect(r.totals.recordCount).toBe(BigInt(i + 1));
    });
  });

  it("splits a long queue into batches of at most batchSizeMax", async () => {
    const store = await gated();
    const uow = new UnitOfWork(store, { batchSizeMax: 16, queueDepthMax: 1000 });
    await Promise.all(Array.from({ length: 40 }, (_, i) => uow.submit(record(`r${i}`))));
    expect(store.batches).toEqual([16, 16, 8]);
  });

  it("gathers writes that arrive during a commit into the next batch", async () => {
    const store = await gated();
    const uow = new UnitOfWork(store, { batchSizeMax: 256, queueDepthMax: 1000 });
    store.hold();
    const first = uow.submit(record("first"));
    await new Promise((resolve) => setImmediate(resolve)); // the first batch is now committing
    const later = Array.from({ length: 10 }, (_, i) => uow.submit(record(`later${i}`)));
    store.release();
    await Promise.all([first, ...later]);
    expect(store.batches).toEqual([1, 10]);
  });

  it("refuses writes past the queue depth with QueueFullError and writes nothing for them", async () => {
    const store = await gated();
    const uow = new UnitOfWork(store, { batchSizeMax: 2, queueDepthMax: 4 });
    store.hold();
    const accepted = [uow.submit(record("a")), uow.submit(record("b")), uow.submit(record("c")), uow.submit(record("d"))];
    await expect(uow.submit(record("e"))).rejects.toBeInstanceOf(QueueFullError);
    store.release();
    await Promise.all(accepted);
    expect((await store.getTotals("p")).recordCount).toBe(4n);
  });

  it("drops a write whose deadline passed before it joined a batch", async () => {
    const store = await gated();
    const uow = new UnitOfWork(store, { batchSizeMax: 1, queueDepthMax: 10 });
    store.hold();
    const first = uow.submit(record("first"));
    const controller = new AbortController();
    const late = uow.submit(record("late"), controller.signal);
    controller.abort();
    store.release();
    await first;
    await expect(late).rejects.toBeInstanceOf(DeadlinePassedError);
    expect((await store.getTotals("p")).recordCount).toBe(1n);
  });

  it("fails every write of a batch whose transaction failed, and keeps serving", async () => {
    const store = await gated();
    const uow = new UnitOfWork(store, { batchSizeMax: 10, queueDepthMax: 100 });
    store.failNext = true;
    const failed = await Promise.allSettled([uow.submit(record("x")), uow.submit(record("y"))]);
    expect(failed.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect((failed[0] as PromiseRejectedResult).reason).toBeInstanceOf(StoreUnavailableError);
    // The retry (same request ids) succeeds and counts once.
    const retried = await Promise.all([uow.submit(record("x")), uow.submit(record("y"))]);
    expect(retried.map((r) => r.duplicate)).toEqual([false, false]);
    expect((await store.getTotals("p")).recordCount).toBe(2n);
  });

  it("close() commits what is queued and refuses new writes", async () => {
    const store = await gated();
    const uow = new UnitOfWork(store, { batchSizeMax: 10, queueDepthMax: 100 });
    const pending = Array.from({ length: 25 }, (_, i) => uow.submit(record(`r${i}`)));
    await uow.close();
    await Promise.all(pending);
    expect((await store.getTotals("p")).recordCount).toBe(25n);
    await expect(uow.submit(record("after"))).rejects.toBeInstanceOf(ClosedError);
  });

  it("rejects impossible sizing", async () => {
    const store = await gated();
    expect(() => new UnitOfWork(store, { batchSizeMax: 10, queueDepthMax: 5 })).toThrow(/batchSizeMax/);
  });
});
