// The SQLite store's writes: one synchronous transaction per batch on the
// native better-sqlite3 handle, each op in a savepoint of its own. Being
// synchronous, no other query can interleave with an open transaction on
// SQLite's single connection, and a batch costs no await per statement
// (docs/decisions/0001-storage-hot-path.md). The decisions (alerts, reserve
// plan, refusal reasons) are the ledger's; this file runs SQL and maps rows.
//
// Holds, windows, breakdowns and alerts (docs/decisions/0004-holds-and-windows.md)
// follow the same rule: every aggregate is an increment in the transaction of
// the write that causes it, and a decision reads a handful of rows by key.
import type Database from "better-sqlite3";
import { advanceAlerts } from "../../ledger/alerts.ts";
import { CurrencyLockedError, HoldNotActiveError, HoldNotFoundError, isOpError, TotalOverflowError } from "../../ledger/errors.ts";
import { periodKeys } from "../../ledger/periods.ts";
import { overflowingQuantity, whyInactive } from "../../ledger/refusals.ts";
import { planNestedReserve } from "../../ledger/nested-reserve.ts";
import type { OpResult, ReserveOutcome, WriteOp } from "../../ledger/store.ts";
import type { Budget, BudgetChange, CostEntry, Hold, HoldRequest, RecordOutcome, ThresholdCrossing } from "../../ledger/types.ts";
import { currencyDefault, timeZoneDefault } from "../../limits.ts";
import {
  alertStatesFromRows,
  budgetFromRow,
  duplicateOutcome,
  holdFactsFromRow,
  holdFromRow,
  parseThresholds,
  pricingParams,
  totalsFromRow,
  type BudgetRow as SharedBudgetRow,
  type HoldRow as SharedHoldRow,
  type RecordRow as SharedRecordRow,
  type TotalsRow as SharedTotalsRow,
} from "../rows.ts";
import { encodeDecision, replayReserve, type ReserveKeyRow } from "../reserve-rows.ts";
import { DuplicateKey } from "./errors.ts";
import type { SqliteProjectRemoval } from "./project-removal.ts";
import { stateInBatch } from "./state.ts";
import type { SqliteStatements } from "./statements.ts";
import type { SqliteTreeStatements } from "./tree-statements.ts";
import { SqliteTreeWrites } from "./tree-writes.ts";
import type { SqliteCapStatements } from "./cap-statements.ts";
import { SqliteCapWrites } from "./cap-writes.ts";
import { capParams, capSettingsOf } from "../cap-rows.ts";
import { rateTargets, type CapSettings } from "../../ledger/cap-levels.ts";

type TotalsRow = SharedTotalsRow<bigint>;
type RecordRow = SharedRecordRow<bigint> & { id: bigint };
type BudgetRow = SharedBudgetRow<bigint>;
type HoldRow = SharedHoldRow<bigint>;

/** Applies write batches on the connection it was given (the writer thread's,
 * or the only one of a :memory: database), synchronously. */
export class SqliteBatchWrites {
  readonly #statements: SqliteStatements;
  readonly #batch: Database.Transaction<(ops: readonly WriteOp[], nowMs: number) => OpResult[]>;
  readonly #applyRecord: (entry: CostEntry, nowMs: number) => RecordOutcome;
  readonly #applyBudget: (change: BudgetChange, nowMs: number) => Budget;
  readonly #applyReserve: (request: HoldRequest, nowMs: number) => ReserveOutcome;
  readonly #applyRelease: (projectId: string, holdId: string, nowMs: number) => Hold;
  readonly #sweep: Database.Transaction<(nowMs: number, countMax: number) => number>;
  readonly #removal: SqliteProjectRemoval;
  /** Budget rows read during the batch being applied (null: no row). Budgets
   * change only through setBudget ops, which refresh their entry, so a batch of
   * many records of one project reads its budget once. */
  readonly #budgets = new Map<string, BudgetRow | null>();
  readonly #tree: SqliteTreeWrites;
  readonly #caps: SqliteCapWrites;

  constructor(
    db: Database.Database,
    statements: SqliteStatements,
    tree: SqliteTreeStatements,
    caps: SqliteCapStatements,
    removal: SqliteProjectRemoval,
  ) {
    this.#statements = statements;
    this.#caps = new SqliteCapWrites(caps);
    this.#tree = new SqliteTreeWrites(statements, tree, (projectId) => this.#budgetRow(projectId));
    // Nested better-sqlite3 transactions are savepoints: an op that throws rolls
    // back only itself, and the batch goes on.
    this.#applyRecord = db.transaction((entry: CostEntry, nowMs: number) => this.#record(entry, nowMs));
    this.#applyBudget = db.transaction((change: BudgetChange, nowMs: number) => this.#setBudget(change, nowMs));
    this.#applyReserve = db.transaction((request: HoldRequest, nowMs: number) => this.#reserve(request, nowMs));
    this.#applyRelease = db.transaction((projectId: string, holdId: string, nowMs: number) => this.#release(projectId, holdId, nowMs));
    this.#batch = db.transaction((ops: readonly WriteOp[], nowMs: number) => {
      this.#budgets.clear();
      return ops.map((op) => this.#applyOne(op, nowMs));
    });
    this.#sweep = db.transaction((nowMs: number, countMax: number) => this.#sweepExpired(nowMs, countMax));
    this.#removal = removal;
  }

  /** commitBatch, blocking until the commit (and its fsync) is done. */
  commitBatch(ops: readonly WriteOp[], nowMs: number): OpResult[] {
    // BEGIN IMMEDIATE takes the write lock up front, so another connection to
    // the same file waits (busy_timeout) instead of failing mid-transaction.
    return this.#batch.immediate(ops, nowMs);
  }

  deleteExpiredHolds(nowMs: number, countMax: number): number {
    return this.#sweep.immediate(nowMs, countMax);
  }

  deleteReserveKeysBefore(beforeMs: number, countMax: number): number {
    return this.#statements.deleteReserveKeys.run(beforeMs, countMax).changes;
  }

  deleteRecordsBefore(beforeMs: number, countMax: number): number {
    return this.#statements.deleteBefore.run(beforeMs, countMax).changes;
  }

  #applyOne(op: WriteOp, nowMs: number): OpResult {
    try {
      switch (op.kind) {
        case "record":
          this.#removal.refuseArchived(op.entry.projectId);
          try {
            // Without a hold or a parent, every refusal comes before the op's
            // first write (#record checks the key, then the increment's guard
            // refuses in SQL), so it needs no savepoint of its own: 2 of 7
            // statements. An ancestor's increment may still refuse after the
            // project's: that one needs the savepoint, and so does a rate
            // bucket's increment.
            const savepoint =
              (op.entry.holdId ?? "") !== "" ||
              this.#tree.parentOf(op.entry.projectId) !== null ||
              this.#countsInRates(op.entry.projectId, op.entry.agentId);
            return { ok: true, value: savepoint ? this.#applyRecord(op.entry, nowMs) : this.#record(op.entry, nowMs) };
          } catch (error) {
            if (error instanceof DuplicateKey) return this.#duplicate(op.entry);
            throw error;
          }
        case "setBudget": {
          this.#removal.refuseArchived(op.change.projectId);
          const budget = this.#applyBudget(op.change, nowMs);
          // Committed in this batch: read it again. A refused one (thrown
          // above) changed nothing, its entry still holds.
          this.#budgets.delete(op.change.projectId);
          return { ok: true, value: budget };
        }
        case "reserve":
          this.#removal.refuseArchived(op.request.projectId);
          return { ok: true, value: this.#applyReserve(op.request, nowMs) };
        case "release":
          return { ok: true, value: this.#applyRelease(op.projectId, op.holdId, nowMs) };
        case "archive":
          return { ok: true, value: this.#removal.archive(op.projectId, nowMs) };
        case "unarchive":
          return { ok: true, value: this.#removal.unarchive(op.projectId) };
        case "delete": {
          this.#tree.refuseDelete(op.projectId);
          const deleted = this.#removal.delete(op.projectId, op.noRecordsSinceMs, op.recordsMax, nowMs);
          this.#budgets.delete(op.projectId); // its budget row is gone
          return { ok: true, value: deleted };
        }
      }
    } catch (error) {
      if (isOpError(error)) return { ok: false, error };
      // Anything else (I/O, constraint we did not expect) fails the whole batch.
      throw error;
    }
  }

  #record(entry: CostEntry, nowMs: number): RecordOutcome {
    const s = this.#statements;
    const holdId = entry.holdId ?? "";
    const chain = this.#tree.chain(entry.projectId);
    let settledHoldNanos = 0n;
    if (holdId === "") {
      if (s.recordExists.get(entry.projectId, entry.requestId) !== undefined) throw new DuplicateKey();
    } else {
      const hold = s.deleteActiveHold.get({ holdId, projectId: entry.projectId, nowMs }) as HoldRow | undefined;
      if (hold === undefined) {
        // The original of a retried request settled this hold: a duplicate.
        if (s.selectRecord.get(entry.projectId, entry.requestId) !== undefined) throw new DuplicateKey();
        throw new HoldNotActiveError(entry.projectId, holdId, this.#whyInactive(holdId, entry.projectId, nowMs));
      }
      this.#tree.subtractReservation(chain, hold.amount_nanos, 1n, nowMs);
      this.#caps.holdEnded(holdId);
      settledHoldNanos = hold.amount_nanos;
    }
    const budgetRow = this.#budgetRow(entry.projectId);
    const keys = periodKeys(nowMs, budgetRow?.time_zone ?? timeZoneDefault);
    const params = { ...entry, ...pricingParams(entry), holdId, nowMs, dayPeriod: keys.day, monthPeriod: keys.month };
    const totals = s.upsertTotals.get(params) as TotalsRow | undefined;
    if (totals === undefined) {
      // The guard refused the increment. A retry of an already recorded request
      // must still be answered as a duplicate, not as an overflow.
      if (s.selectRecord.get(entry.projectId, entry.requestId) !== undefined) throw new DuplicateKey();
      throw new TotalOverflowError(
        entry.projectId,
        overflowingQuantity(entry, totalsFromRow(s.selectTotals.get(entry.projectId) as TotalsRow)),
      );
    }
    const inserted = s.insertRecord.get({
      ...params,
      totalAfter: totals.total_cost_nanos,
      inputAfter: totals.input_tokens,
      outputAfter: totals.output_tokens,
      countAfter: totals.record_count,
    });
    if (inserted === undefined) {
      // Checked absent above in this same transaction, with no savepoint to
      // undo the increment: fail the whole batch rather than count it.
      if (holdId === "")
        throw new Error(`invariant: request_id "${entry.requestId}" of project "${entry.projectId}" appeared during its own op`);
      throw new DuplicateKey(); // rolls back the savepoint: the increment and the settle
    }
    s.upsertLabels.run(params);
    this.#caps.recorded(this.#chainBudgets(chain), entry, keys, nowMs);
    const crossings: ThresholdCrossing[] =
      budgetRow === undefined ? [] : this.#advanceAlerts(entry.projectId, entry, budgetRow, totals, nowMs);
    // Every ancestor's rolled-up totals, windows and alert state, in the same
    // savepoint (a tree shares one time zone: the same day and month keys).
    for (const ancestor of chain.slice(1)) {
      const rolled = s.upsertTotals.get({ ...params, projectId: ancestor }) as TotalsRow | undefined;
      if (rolled === undefined) throw new TotalOverflowError(ancestor, "rolled-up totals (of its descendants)");
      const ancestorBudget = this.#budgetRow(ancestor);
      if (ancestorBudget !== undefined) crossings.push(...this.#advanceAlerts(ancestor, entry, ancestorBudget, rolled, nowMs));
    }
    return { totals: totalsFromRow(totals), duplicate: false, requestId: entry.requestId, crossings, settledHoldNanos };
  }

  /** The row was just incremented in this transaction, so it is ours until
   * commit: the alert state advances exactly once per threshold. */
  #advanceAlerts(projectId: string, entry: CostEntry, budgetRow: BudgetRow, totals: TotalsRow, nowMs: number): ThresholdCrossing[] {
    const { crossings, next } = advanceAlerts(
      projectId,
      entry.requestId,
      parseThresholds(budgetRow.alert_thresholds_bps),
      alertStatesFromRows(budgetRow, totals),
      nowMs,
    );
    if (next !== null) {
      this.#statements.setAlerts.run({
        projectId,
        lifetimeBps: next.lifetime.alertedBps,
        lifetimeLimitNanos: next.lifetime.alertedLimitNanos,
        dayBps: next.day.alertedBps,
        dayLimitNanos: next.day.alertedLimitNanos,
        monthBps: next.month.alertedBps,
        monthLimitNanos: next.month.alertedLimitNanos,
      });
    }
    return crossings;
  }

  #duplicate(entry: CostEntry): OpResult {
    const row = this.#statements.selectRecord.get(entry.projectId, entry.requestId) as RecordRow | undefined;
    if (row === undefined) throw new Error(`invariant: duplicate key ${entry.projectId}/${entry.requestId} has no record`);
    return duplicateOutcome(entry, row);
  }

  #setBudget(change: BudgetChange, nowMs: number): Budget {
    const s = this.#statements;
    const current = s.selectBudget.get(change.projectId) as BudgetRow | undefined;
    const currentCurrency = current?.currency ?? currencyDefault;
    const currency = change.currency ?? currentCurrency;
    if (currency !== currentCurrency) {
      const totals = s.selectTotals.get(change.projectId) as TotalsRow | undefined;
      if (totals !== undefined && totals.record_count > 0n) throw new CurrencyLockedError(change.projectId, currentCurrency, currency);
    }
    const before = current;
    const row = s.upsertBudget.get({
      projectId: change.projectId,
      limitNanos: change.limitNanos,
      currency,
      nowMs,
      dailyLimitNanos: change.dailyLimitNanos ?? null,
      monthlyLimitNanos: change.monthlyLimitNanos ?? null,
      timeZone: change.timeZone ?? null,
      alertThresholdsBps: change.alertThresholdsBps == null ? null : change.alertThresholdsBps.join(","),
      ...capParams(change),
    }) as BudgetRow;
    this.#tree.apply(change.projectId, change.parentId, before, row, nowMs);
    return budgetFromRow(change.parentId == null ? row : { ...row, parent_id: change.parentId });
  }

  #reserve(request: HoldRequest, nowMs: number): ReserveOutcome {
    const s = this.#statements;
    const chain = this.#tree.chain(request.projectId);
    const states = chain.map((projectId) => stateInBatch(s, projectId, nowMs, this.#budgetRow(projectId)));
    const state = states[0]!;
    if (request.requestId !== "") {
      const key = s.selectReserveKey.get(request.projectId, request.requestId) as ReserveKeyRow | undefined;
      if (key !== undefined) {
        const replay = replayReserve(request, key, s.selectHold.get(key.hold_id) as HoldRow | undefined, state, nowMs);
        if (!replay.ok) throw replay.error;
        return replay.value as ReserveOutcome;
      }
    }
    // Every level decides; the hold counts at every level or at none (this
    // op's savepoint).
    const agentId = request.agentId ?? "";
    const plan = planNestedReserve(request, states, nowMs, this.#caps.levels(states, agentId, nowMs));
    if (plan.kind === "refused") return plan.outcome;
    if (plan.kind === "tooManyHolds") throw plan.error;
    const { hold, decision, nested } = plan;
    s.insertHold.run({ ...hold, nowMs, agentId });
    this.#tree.addReservation(chain, hold.amountNanos, nowMs);
    this.#caps.holdPlaced(
      states.map((level) => level.budget),
      hold,
      nowMs,
    );
    if (request.requestId !== "") {
      s.insertReserveKey.run({
        ...hold,
        requestId: request.requestId,
        ttlMs: request.ttlMs,
        decisionJson: encodeDecision(decision),
        tokenFingerprint: request.tokenFingerprint ?? "",
        agentId,
      });
    }
    return { decision, state, hold, nested };
  }

  #release(projectId: string, holdId: string, nowMs: number): Hold {
    const row = this.#statements.deleteActiveHold.get({ holdId, projectId, nowMs }) as HoldRow | undefined;
    if (row === undefined) throw new HoldNotFoundError(holdId, this.#whyInactive(holdId, projectId, nowMs));
    this.#tree.subtractReservation(this.#tree.chain(row.project_id), row.amount_nanos, 1n, nowMs);
    this.#caps.holdEnded(holdId);
    return holdFromRow(row);
  }

  #whyInactive(holdId: string, projectId: string, nowMs: number): string {
    return whyInactive(holdFactsFromRow(this.#statements.selectHold.get(holdId) as HoldRow | undefined), projectId, nowMs);
  }

  #sweepExpired(nowMs: number, countMax: number): number {
    const rows = this.#statements.sweepHolds.all(nowMs, countMax) as Array<{ project_id: string; amount_nanos: bigint }>;
    const perProject = new Map<string, { amountNanos: bigint; holdCount: bigint }>();
    for (const row of rows) {
      const sum = perProject.get(row.project_id) ?? { amountNanos: 0n, holdCount: 0n };
      sum.amountNanos += row.amount_nanos;
      sum.holdCount += 1n;
      perProject.set(row.project_id, sum);
    }
    this.#budgets.clear(); // a sweep runs outside a batch: read the tree as it is now
    for (const [projectId, sum] of perProject)
      this.#tree.subtractReservation(this.#tree.chain(projectId), sum.amountNanos, sum.holdCount, nowMs);
    this.#caps.sweep(nowMs, countMax);
    return rows.length;
  }

  #chainBudgets(chain: readonly string[]): CapSettings[] {
    return chain.map((projectId) => capSettingsOf(projectId, this.#budgetRow(projectId)));
  }

  /** Whether a record of this project (a root) by `agentId` adds to a rate
   * bucket: the same rule the write itself follows (rateTargets). */
  #countsInRates(projectId: string, agentId: string): boolean {
    const targets = rateTargets(this.#chainBudgets([projectId]), agentId);
    return targets.projects.length > 0 || targets.agent;
  }

  #budgetRow(projectId: string): BudgetRow | undefined {
    let row = this.#budgets.get(projectId);
    if (row === undefined) {
      row = (this.#statements.selectBudget.get(projectId) as BudgetRow | undefined) ?? null;
      this.#budgets.set(projectId, row);
    }
    return row ?? undefined;
  }
}
