// LedgerStore on SQLite. MikroORM owns the connection, the entities and the
// migrations; the hot path runs prepared statements on the connection's native
// better-sqlite3 handle, inside one synchronous transaction per batch. Being
// synchronous, no other query can interleave with an open transaction on
// SQLite's single connection, and a batch costs no await per statement
// (docs/decisions/0001-storage-hot-path.md).
//
// Every increment happens in SQL (`total = total + ?`, guarded against int64
// overflow by the WHERE clause of the upsert), never read-modify-write in JS.
//
// Holds, windows, breakdowns and alerts (docs/decisions/0004-holds-and-windows.md)
// follow the same rule: every aggregate is an increment in the transaction of
// the write that causes it, and a decision reads a handful of rows by key.
import type Database from "better-sqlite3";
import { SqliteProjectRemoval } from "./sqlite-project-removal.ts";
import { activeHoldsPerProjectMax, currencyDefault, sqliteStateCacheEntriesMax, timeZoneDefault } from "../limits.ts";
import { int64Max } from "../ledger/money.ts";
import { crossedBps, decideLimits, highestReachedBps, limitInputsOf } from "../ledger/budget.ts";
import {
  CurrencyLockedError,
  HoldLimitError,
  HoldNotActiveError,
  HoldNotFoundError,
  isOpError,
  StoreUnavailableError,
  TotalOverflowError,
} from "../ledger/errors.ts";
import { periodKeys } from "../ledger/periods.ts";
import { ProjectOrder, type CurrencyReserved, type CurrencySpend, type ProjectEntry, type ProjectListQuery } from "../ledger/projects.ts";
import { projectOf, type LedgerStore, type OpResult, type ReserveOutcome, type WriteOp } from "../ledger/store.ts";
import {
  budgetFromRow,
  duplicateOutcome,
  encodeDecision,
  holdFromRow,
  parseThresholds,
  pricingParams,
  recordViewFromRow,
  replayReserve,
  totalsFromRow,
  unsetBudget,
  type BudgetRow as SharedBudgetRow,
  type HoldRow as SharedHoldRow,
  type RecordRow as SharedRecordRow,
  type ReserveKeyRow,
  type TotalsRow as SharedTotalsRow,
} from "./rows.ts";
import {
  Window,
  zeroTotals,
  type Breakdown,
  type Budget,
  type BudgetChange,
  type BudgetState,
  type CostEntry,
  type CostRecordQuery,
  type CostRecordView,
  type Dimension,
  type Hold,
  type HoldRequest,
  type PeriodTotals,
  type ProjectTotals,
  type RecordOutcome,
  type ThresholdCrossing,
} from "../ledger/types.ts";

type TotalsRow = SharedTotalsRow<bigint>;
type RecordRow = SharedRecordRow<bigint> & { id: bigint };
type BudgetRow = SharedBudgetRow<bigint>;
/** #selectState: budget columns prefixed b_, reservations r_, then project_totals' own. */
type StateRow = { b_project_id: string | null; r_hold_count: bigint | null; project_id: string | null } & Record<string, unknown>;
type HoldRow = SharedHoldRow<bigint>;
interface BreakdownRow {
  label: string;
  total_cost_nanos: bigint;
  input_tokens: bigint;
  output_tokens: bigint;
  record_count: bigint;
  catalog_cost_nanos: bigint;
  priced_cost_nanos: bigint;
  unpriced_record_count: bigint;
}

/** Thrown inside the per-op savepoint to roll it back when the request_id exists. */
class DuplicateKey extends Error {}

const INT64_MAX = int64Max.toString();

/** Where a store's writes go when they do not run on its own connection: the
 * writer thread (src/store/sqlite-writer.ts), which applies them with a
 * SqliteLedgerStore of its own (the *Sync methods below). */
export interface SqliteWrites {
  commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]>;
  deleteExpiredHolds(nowMs: number, countMax: number): Promise<number>;
  deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number>;
  deleteReserveKeysBefore(beforeMs: number, countMax: number): Promise<number>;
  close(): Promise<void>;
}

export class SqliteLedgerStore implements LedgerStore {
  readonly #db: Database.Database;
  readonly #close: () => Promise<void>;
  readonly #writes: SqliteWrites | undefined;
  readonly #upsertTotals: Database.Statement;
  readonly #insertRecord: Database.Statement;
  readonly #selectRecord: Database.Statement;
  readonly #recordExists: Database.Statement;
  readonly #selectTotals: Database.Statement;
  readonly #selectBudget: Database.Statement;
  readonly #selectState: Database.Statement;
  readonly #upsertBudget: Database.Statement;
  readonly #deleteBefore: Database.Statement;
  readonly #listById: Database.Statement;
  readonly #listBySpent: Database.Statement;
  readonly #spendAll: Database.Statement;
  readonly #spendOtherCurrencies: Database.Statement;
  readonly #setAlerts: Database.Statement;
  readonly #upsertLabels: Database.Statement;
  readonly #selectBreakdown: Record<Dimension, Database.Statement>;
  readonly #insertHold: Database.Statement;
  readonly #selectHold: Database.Statement;
  readonly #selectReserveKey: Database.Statement;
  readonly #insertReserveKey: Database.Statement;
  readonly #deleteReserveKeys: Database.Statement;
  readonly #deleteActiveHold: Database.Statement;
  readonly #selectReservations: Database.Statement;
  readonly #selectExpiredHolds: Database.Statement;
  readonly #addReservation: Database.Statement;
  readonly #subtractReservation: Database.Statement;
  readonly #sweepHolds: Database.Statement;
  readonly #listRecords: Database.Statement;
  readonly #reservationsOf: Database.Statement;
  readonly #reservedAll: Database.Statement;
  readonly #reservedOtherCurrencies: Database.Statement;
  readonly #expiredByCurrency: Database.Statement;
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
  /** The last #selectState row read per project, for projects without holds
   * (their active holds depend on the clock, so they are read every time).
   * Only writes of this process change a project's rows (one process per
   * SQLite file: docs/deploy.md), and every write names its project, so
   * commitBatch drops the entries of the projects a batch touched once it has
   * committed: a read that starts after a write was acknowledged never sees
   * the state before it. Insertion order is age: the oldest entry goes first. */
  readonly #stateRows = new Map<string, StateRow>();

  /** `db` is the native handle of an initialised, migrated connection; `close`
   * releases it (the ORM's close). With `writes`, every write goes there and
   * this connection only reads; without, writes run here, synchronously. */
  constructor(db: Database.Database, close: () => Promise<void>, writes?: SqliteWrites) {
    this.#db = db;
    this.#close = close;
    this.#writes = writes;
    const prepare = (sql: string) => db.prepare(sql).safeIntegers(true);
    // Lifetime, current day and current month in one upsert. A record of a
    // later period (keys compare as text: "2026-11-28" > "2026-11-27") starts
    // that period's totals and alert state afresh; SET sees the old row on
    // every right-hand side, so the CASEs all compare against the old period.
    const periodSet = (w: "day" | "month") => `
        ${w}_cost_nanos = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_cost_nanos ELSE ${w}_cost_nanos + excluded.${w}_cost_nanos END,
        ${w}_input_tokens = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_input_tokens ELSE ${w}_input_tokens + excluded.${w}_input_tokens END,
        ${w}_output_tokens = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_output_tokens ELSE ${w}_output_tokens + excluded.${w}_output_tokens END,
        ${w}_record_count = CASE WHEN excluded.${w}_period > ${w}_period THEN 1 ELSE ${w}_record_count + 1 END,
        ${w}_alerted_bps = CASE WHEN excluded.${w}_period > ${w}_period THEN 0 ELSE ${w}_alerted_bps END,
        ${w}_alerted_limit_nanos = CASE WHEN excluded.${w}_period > ${w}_period THEN 0 ELSE ${w}_alerted_limit_nanos END,
        ${w}_period = CASE WHEN excluded.${w}_period > ${w}_period THEN excluded.${w}_period ELSE ${w}_period END`;
    this.#upsertTotals = prepare(`
      INSERT INTO project_totals (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms,
        day_period, day_cost_nanos, day_input_tokens, day_output_tokens, day_record_count,
        month_period, month_cost_nanos, month_input_tokens, month_output_tokens, month_record_count)
      VALUES (@projectId, @costNanos, @inputTokens, @outputTokens, 1, @nowMs, @nowMs,
        @dayPeriod, @costNanos, @inputTokens, @outputTokens, 1,
        @monthPeriod, @costNanos, @inputTokens, @outputTokens, 1)
      ON CONFLICT (project_id) DO UPDATE SET
        total_cost_nanos = total_cost_nanos + excluded.total_cost_nanos,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        record_count = record_count + 1,
        updated_at_ms = excluded.updated_at_ms,${periodSet("day")},${periodSet("month")}
      WHERE total_cost_nanos <= ${INT64_MAX} - excluded.total_cost_nanos
        AND input_tokens <= ${INT64_MAX} - excluded.input_tokens
        AND output_tokens <= ${INT64_MAX} - excluded.output_tokens
        AND record_count < ${INT64_MAX}
      RETURNING *`);
    this.#insertRecord = prepare(`
      INSERT INTO cost_records (project_id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, recorded_at_ms,
        total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after, hold_id,
        cached_input_tokens, cache_write_tokens, cost_source, catalog_cost_nanos, price_id, occurred_at_ms)
      VALUES (@projectId, @requestId, @costNanos, @inputTokens, @outputTokens, @agentId, @model, @nowMs,
        @totalAfter, @inputAfter, @outputAfter, @countAfter, @holdId,
        @cachedInputTokens, @cacheWriteTokens, @costSource, @catalogCostNanos, @priceId, @occurredAtMs)
      ON CONFLICT (project_id, request_id) DO NOTHING
      RETURNING id`);
    this.#selectRecord = prepare(`SELECT * FROM cost_records WHERE project_id = ? AND request_id = ?`);
    this.#recordExists = prepare(`SELECT 1 FROM cost_records WHERE project_id = ? AND request_id = ?`);
    this.#selectTotals = prepare(`SELECT * FROM project_totals WHERE project_id = ?`);
    this.#selectBudget = prepare(`SELECT * FROM project_budgets WHERE project_id = ?`);
    // A read's whole state (budget, totals, reservations) in one statement: the
    // hot read path (GetProjectCost, CheckBudget) pays one SQLite call, not three.
    this.#selectState = prepare(`
      SELECT b.project_id AS b_project_id, b.limit_nanos AS b_limit_nanos, b.currency AS b_currency,
        b.updated_at_ms AS b_updated_at_ms, b.daily_limit_nanos AS b_daily_limit_nanos,
        b.monthly_limit_nanos AS b_monthly_limit_nanos, b.time_zone AS b_time_zone,
        b.alert_thresholds_bps AS b_alert_thresholds_bps,
        r.reserved_nanos AS r_reserved_nanos, r.hold_count AS r_hold_count,
        t.*
      FROM (SELECT ? AS pid) q
      LEFT JOIN project_budgets b ON b.project_id = q.pid
      LEFT JOIN project_totals t ON t.project_id = q.pid
      LEFT JOIN project_reservations r ON r.project_id = q.pid`);
    // Fields given as NULL keep their current value (COALESCE), with no read in JS.
    this.#upsertBudget = prepare(`
      INSERT INTO project_budgets (project_id, limit_nanos, currency, created_at_ms, updated_at_ms,
        daily_limit_nanos, monthly_limit_nanos, time_zone, alert_thresholds_bps)
      VALUES (@projectId, @limitNanos, @currency, @nowMs, @nowMs,
        COALESCE(@dailyLimitNanos, 0), COALESCE(@monthlyLimitNanos, 0), COALESCE(@timeZone, '${timeZoneDefault}'), COALESCE(@alertThresholdsBps, ''))
      ON CONFLICT (project_id) DO UPDATE SET
        limit_nanos = excluded.limit_nanos, currency = excluded.currency, updated_at_ms = excluded.updated_at_ms,
        daily_limit_nanos = COALESCE(@dailyLimitNanos, project_budgets.daily_limit_nanos),
        monthly_limit_nanos = COALESCE(@monthlyLimitNanos, project_budgets.monthly_limit_nanos),
        time_zone = COALESCE(@timeZone, project_budgets.time_zone),
        alert_thresholds_bps = COALESCE(@alertThresholdsBps, project_budgets.alert_thresholds_bps)
      RETURNING project_id, limit_nanos, currency, updated_at_ms, daily_limit_nanos, monthly_limit_nanos, time_zone, alert_thresholds_bps`);
    this.#deleteBefore = prepare(`
      DELETE FROM cost_records WHERE id IN (
        SELECT id FROM cost_records WHERE recorded_at_ms < ? ORDER BY recorded_at_ms LIMIT ?)`);
    // Window and label totals are sums over subsets of the project's records,
    // so they never exceed the lifetime totals, whose guard covers them.
    this.#setAlerts = prepare(`
      UPDATE project_totals SET
        alerted_bps = @lifetimeBps, alerted_limit_nanos = @lifetimeLimitNanos,
        day_alerted_bps = @dayBps, day_alerted_limit_nanos = @dayLimitNanos,
        month_alerted_bps = @monthBps, month_alerted_limit_nanos = @monthLimitNanos
      WHERE project_id = @projectId`);
    this.#upsertLabels = prepare(`
      INSERT INTO project_label_totals (project_id, agent_id, model, total_cost_nanos, input_tokens, output_tokens, record_count, updated_at_ms,
        catalog_cost_nanos, priced_cost_nanos, unpriced_record_count)
      VALUES (@projectId, @agentId, @model, @costNanos, @inputTokens, @outputTokens, 1, @nowMs,
        coalesce(@catalogCostNanos, 0), CASE WHEN @catalogCostNanos IS NULL THEN 0 ELSE @costNanos END, CASE WHEN @catalogCostNanos IS NULL THEN 1 ELSE 0 END)
      ON CONFLICT (project_id, agent_id, model) DO UPDATE SET
        total_cost_nanos = total_cost_nanos + excluded.total_cost_nanos,
        catalog_cost_nanos = catalog_cost_nanos + excluded.catalog_cost_nanos,
        priced_cost_nanos = priced_cost_nanos + excluded.priced_cost_nanos,
        unpriced_record_count = unpriced_record_count + excluded.unpriced_record_count,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        record_count = record_count + 1,
        updated_at_ms = excluded.updated_at_ms`);
    const breakdownBy = (column: "agent_id" | "model") =>
      prepare(`
        SELECT ${column} AS label, SUM(total_cost_nanos) AS total_cost_nanos, SUM(input_tokens) AS input_tokens,
          SUM(output_tokens) AS output_tokens, SUM(record_count) AS record_count, SUM(catalog_cost_nanos) AS catalog_cost_nanos,
          SUM(priced_cost_nanos) AS priced_cost_nanos, SUM(unpriced_record_count) AS unpriced_record_count
        FROM project_label_totals WHERE project_id = ?
        GROUP BY ${column} ORDER BY SUM(total_cost_nanos) DESC, ${column} ASC LIMIT ?`);
    this.#selectBreakdown = { agent: breakdownBy("agent_id"), model: breakdownBy("model") };
    this.#insertHold = prepare(`
      INSERT INTO holds (hold_id, project_id, amount_nanos, created_at_ms, expires_at_ms)
      VALUES (@holdId, @projectId, @amountNanos, @nowMs, @expiresAtMs)`);
    this.#selectHold = prepare(`SELECT * FROM holds WHERE hold_id = ?`);
    this.#selectReserveKey = prepare(`SELECT * FROM reserve_keys WHERE project_id = ? AND request_id = ?`);
    this.#insertReserveKey = prepare(`
      INSERT INTO reserve_keys (project_id, request_id, hold_id, amount_nanos, ttl_ms, created_at_ms, expires_at_ms, decision_json, token_fingerprint)
      VALUES (@projectId, @requestId, @holdId, @amountNanos, @ttlMs, @createdAtMs, @expiresAtMs, @decisionJson, @tokenFingerprint)`);
    this.#deleteReserveKeys = prepare(`
      DELETE FROM reserve_keys WHERE rowid IN (
        SELECT rowid FROM reserve_keys WHERE expires_at_ms < ? ORDER BY expires_at_ms LIMIT ?)`);
    // Settling and releasing take only an active hold: the expiry is checked
    // here, at the moment of the write, not left to the sweeper.
    this.#deleteActiveHold = prepare(`
      DELETE FROM holds WHERE hold_id = @holdId AND project_id = @projectId AND expires_at_ms > @nowMs
      RETURNING hold_id, project_id, amount_nanos, created_at_ms, expires_at_ms`);
    this.#selectReservations = prepare(`SELECT reserved_nanos, hold_count FROM project_reservations WHERE project_id = ?`);
    // Expired holds still in the table (not swept yet): subtracted at decision time.
    this.#selectExpiredHolds = prepare(`
      SELECT COALESCE(SUM(amount_nanos), 0) AS amount_nanos, COUNT(*) AS hold_count FROM holds
      WHERE project_id = ? AND expires_at_ms <= ?`);
    this.#addReservation = prepare(`
      INSERT INTO project_reservations (project_id, reserved_nanos, hold_count, updated_at_ms)
      VALUES (@projectId, @amountNanos, 1, @nowMs)
      ON CONFLICT (project_id) DO UPDATE SET
        reserved_nanos = reserved_nanos + excluded.reserved_nanos,
        hold_count = hold_count + 1,
        updated_at_ms = excluded.updated_at_ms
      WHERE reserved_nanos <= ${INT64_MAX} - excluded.reserved_nanos
      RETURNING reserved_nanos`);
    this.#subtractReservation = prepare(`
      UPDATE project_reservations SET
        reserved_nanos = reserved_nanos - @amountNanos, hold_count = hold_count - @holdCount, updated_at_ms = @nowMs
      WHERE project_id = @projectId
      RETURNING reserved_nanos, hold_count`);
    this.#sweepHolds = prepare(`
      DELETE FROM holds WHERE hold_id IN (
        SELECT hold_id FROM holds WHERE expires_at_ms <= ? ORDER BY expires_at_ms LIMIT ?)
      RETURNING project_id, amount_nanos`);
    this.#listRecords = prepare(`
      SELECT id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, hold_id, recorded_at_ms, total_cost_nanos_after,
        cached_input_tokens, cache_write_tokens, cost_source, catalog_cost_nanos, price_id, occurred_at_ms FROM cost_records
      WHERE project_id = @projectId AND recorded_at_ms >= @startMs AND recorded_at_ms < @endMs
        AND (recorded_at_ms > @afterMs OR (recorded_at_ms = @afterMs AND id > @afterId))
      ORDER BY recorded_at_ms, id LIMIT @limit`);

    // Project ids come from both tables (a project may have only a budget, or
    // only costs). By id: each arm reads at most @limit rows from its primary key
    // index after the cursor. By spend: a full scan of project_totals with a
    // top-N sort (no index on total_cost_nanos: it would cost every RecordCost an
    // extra index update; see docs/decisions/0003-operator-surfaces.md).
    this.#listById = prepare(`
      SELECT project_id FROM (SELECT project_id FROM project_totals t WHERE project_id > @afterId AND ${notArchived("t")} ORDER BY project_id LIMIT @limit)
      UNION
      SELECT project_id FROM (SELECT project_id FROM project_budgets b WHERE project_id > @afterId AND ${notArchived("b")} ORDER BY project_id LIMIT @limit)
      ORDER BY project_id LIMIT @limit`);
    // Each arm is cut to @limit by its own top-N sort before the merge.
    this.#listBySpent = prepare(`
      SELECT project_id, spent FROM (
        SELECT project_id, total_cost_nanos AS spent FROM project_totals t
        WHERE (@first = 1 OR total_cost_nanos < @afterSpent OR (total_cost_nanos = @afterSpent AND project_id > @afterId)) AND ${notArchived("t")}
        ORDER BY total_cost_nanos DESC, project_id LIMIT @limit)
      UNION ALL
      SELECT project_id, spent FROM (
        SELECT b.project_id AS project_id, 0 AS spent FROM project_budgets b
        WHERE NOT EXISTS (SELECT 1 FROM project_totals t WHERE t.project_id = b.project_id)
          AND (@first = 1 OR @afterSpent > 0 OR b.project_id > @afterId) AND ${notArchived("b")}
        ORDER BY b.project_id LIMIT @limit)
      ORDER BY spent DESC, project_id LIMIT @limit`);
    // TOTAL() is a float sum: it cannot overflow (SUM() would throw past int64).
    // All projects in one scan without a join, then the few in another currency
    // than the default (a join over budgets only); the default currency's share
    // is the difference. 8x faster than one LEFT JOIN at 100k projects.
    this.#spendAll = prepare(`SELECT TOTAL(total_cost_nanos) AS spent, COUNT(*) AS projects FROM project_totals`);
    this.#spendOtherCurrencies = prepare(`
      SELECT b.currency AS currency, TOTAL(t.total_cost_nanos) AS spent, COUNT(*) AS projects
      FROM project_budgets b JOIN project_totals t ON t.project_id = b.project_id
      WHERE b.currency <> '${currencyDefault}' GROUP BY b.currency ORDER BY b.currency`);

    // Active holds of one page of projects (@ids: a JSON array of at most a
    // page of ids) in one statement: the reservation rows by primary key, minus
    // each project's expired, unswept holds (an index range per project on
    // holds(project_id, expires_at_ms)) — the rule of #state, for a page.
    this.#reservationsOf = prepare(`
      SELECT r.project_id AS project_id,
        r.reserved_nanos - COALESCE(e.amount_nanos, 0) AS reserved_nanos,
        r.hold_count - COALESCE(e.hold_count, 0) AS hold_count
      FROM project_reservations r
      LEFT JOIN (
        SELECT project_id, SUM(amount_nanos) AS amount_nanos, COUNT(*) AS hold_count FROM holds
        WHERE project_id IN (SELECT value FROM json_each(@ids)) AND expires_at_ms <= @nowMs
        GROUP BY project_id) e ON e.project_id = r.project_id
      WHERE r.project_id IN (SELECT value FROM json_each(@ids)) AND r.hold_count > 0`);
    // Active holds per currency (metrics), shaped like the spend aggregate:
    // all reservation rows in one scan, the few in other currencies through a
    // join, minus the expired, unswept holds (an index range on expires_at_ms).
    this.#reservedAll = prepare(`SELECT TOTAL(reserved_nanos) AS reserved, TOTAL(hold_count) AS holds FROM project_reservations`);
    this.#reservedOtherCurrencies = prepare(`
      SELECT b.currency AS currency, TOTAL(r.reserved_nanos) AS reserved, TOTAL(r.hold_count) AS holds
      FROM project_budgets b JOIN project_reservations r ON r.project_id = b.project_id
      WHERE b.currency <> '${currencyDefault}' GROUP BY b.currency ORDER BY b.currency`);
    this.#expiredByCurrency = prepare(`
      SELECT COALESCE(b.currency, '${currencyDefault}') AS currency, TOTAL(h.amount_nanos) AS reserved, COUNT(*) AS holds
      FROM holds h LEFT JOIN project_budgets b ON b.project_id = h.project_id
      WHERE h.expires_at_ms <= ? GROUP BY 1`);

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
    this.#removal = new SqliteProjectRemoval(db);
  }

  async commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]> {
    try {
      if (this.#writes !== undefined) return await this.#writes.commitBatch(ops, nowMs);
      return this.commitBatchSync(ops, nowMs);
    } finally {
      // Committed or not (a failed batch may have committed before the failure
      // was seen): the next read of these projects goes to the database.
      for (const op of ops) this.#stateRows.delete(projectOf(op));
    }
  }

  /** commitBatch on this connection, blocking until the commit (and its fsync)
   * is done: what the writer thread runs. */
  commitBatchSync(ops: readonly WriteOp[], nowMs: number): OpResult[] {
    // BEGIN IMMEDIATE takes the write lock up front, so another connection to
    // the same file waits (busy_timeout) instead of failing mid-transaction.
    return this.#batch.immediate(ops, nowMs);
  }

  /** deleteExpiredHolds on this connection (the writer thread runs it). */
  deleteExpiredHoldsSync(nowMs: number, countMax: number): number {
    return this.#sweep.immediate(nowMs, countMax);
  }

  /** deleteReserveKeysBefore on this connection (the writer thread runs it). */
  deleteReserveKeysBeforeSync(beforeMs: number, countMax: number): number {
    return this.#deleteReserveKeys.run(beforeMs, countMax).changes;
  }

  /** deleteRecordsBefore on this connection (the writer thread runs it). */
  deleteRecordsBeforeSync(beforeMs: number, countMax: number): number {
    return this.#deleteBefore.run(beforeMs, countMax).changes;
  }

  #applyOne(op: WriteOp, nowMs: number): OpResult {
    try {
      switch (op.kind) {
        case "record":
          this.#removal.refuseArchived(op.entry.projectId);
          try {
            // Without a hold, every refusal comes before the op's first write
            // (#record checks the key, then the increment's guard refuses in
            // SQL), so it needs no savepoint of its own: 2 of 7 statements.
            const settles = (op.entry.holdId ?? "") !== "";
            return { ok: true, value: settles ? this.#applyRecord(op.entry, nowMs) : this.#record(op.entry, nowMs) };
          } catch (error) {
            if (error instanceof DuplicateKey) return this.#duplicate(op.entry);
            throw error;
          }
        case "setBudget": {
          this.#removal.refuseArchived(op.change.projectId);
          const budget = this.#applyBudget(op.change, nowMs);
          this.#budgets.delete(op.change.projectId); // committed in this batch: read it again
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
    const holdId = entry.holdId ?? "";
    let settledHoldNanos = 0n;
    if (holdId === "") {
      if (this.#recordExists.get(entry.projectId, entry.requestId) !== undefined) throw new DuplicateKey();
    } else {
      const hold = this.#deleteActiveHold.get({ holdId, projectId: entry.projectId, nowMs }) as HoldRow | undefined;
      if (hold === undefined) {
        // The original of a retried request settled this hold: a duplicate.
        if (this.#selectRecord.get(entry.projectId, entry.requestId) !== undefined) throw new DuplicateKey();
        throw new HoldNotActiveError(entry.projectId, holdId, this.#whyInactive(holdId, entry.projectId, nowMs));
      }
      this.#releaseReservation(entry.projectId, hold.amount_nanos, 1n, nowMs);
      settledHoldNanos = hold.amount_nanos;
    }
    const budgetRow = this.#budgetRow(entry.projectId);
    const keys = periodKeys(nowMs, budgetRow?.time_zone ?? timeZoneDefault);
    const params = { ...entry, ...pricingParams(entry), holdId, nowMs, dayPeriod: keys.day, monthPeriod: keys.month };
    const totals = this.#upsertTotals.get(params) as TotalsRow | undefined;
    if (totals === undefined) {
      // The guard refused the increment. A retry of an already recorded request
      // must still be answered as a duplicate, not as an overflow.
      if (this.#selectRecord.get(entry.projectId, entry.requestId) !== undefined) throw new DuplicateKey();
      throw new TotalOverflowError(entry.projectId, this.#overflowingQuantity(entry));
    }
    const inserted = this.#insertRecord.get({
      ...params,
      totalAfter: totals.total_cost_nanos,
      inputAfter: totals.input_tokens,
      outputAfter: totals.output_tokens,
      countAfter: totals.record_count,
    });
    if (inserted === undefined) {
      // Checked absent above in this same transaction, with no savepoint to
      // undo the increment: fail the whole batch rather than count it.
      if (holdId === "") throw new Error(`invariant: request_id "${entry.requestId}" of project "${entry.projectId}" appeared during its own op`);
      throw new DuplicateKey(); // rolls back the savepoint: the increment and the settle
    }
    this.#upsertLabels.run(params);

    const crossings: ThresholdCrossing[] = [];
    if (budgetRow !== undefined) {
      const thresholds = parseThresholds(budgetRow.alert_thresholds_bps);
      const alerts = {
        lifetime: { period: "", limitNanos: budgetRow.limit_nanos, spentNanos: totals.total_cost_nanos, bps: totals.alerted_bps, alertLimitNanos: totals.alerted_limit_nanos },
        day: { period: totals.day_period, limitNanos: budgetRow.daily_limit_nanos, spentNanos: totals.day_cost_nanos, bps: totals.day_alerted_bps, alertLimitNanos: totals.day_alerted_limit_nanos },
        month: { period: totals.month_period, limitNanos: budgetRow.monthly_limit_nanos, spentNanos: totals.month_cost_nanos, bps: totals.month_alerted_bps, alertLimitNanos: totals.month_alerted_limit_nanos },
      };
      let advanced = false;
      for (const window of [Window.lifetime, Window.day, Window.month] as const) {
        const alert = alerts[window];
        if (alert.limitNanos === 0n) continue;
        const reached = highestReachedBps(thresholds, alert.limitNanos, alert.spentNanos);
        const crossed = crossedBps(thresholds, Number(alert.bps), alert.alertLimitNanos, alert.limitNanos, reached);
        if (crossed.length === 0) continue;
        alert.bps = BigInt(reached);
        alert.alertLimitNanos = alert.limitNanos;
        advanced = true;
        for (const thresholdBps of crossed) {
          crossings.push({ projectId: entry.projectId, window, period: alert.period, thresholdBps, limitNanos: alert.limitNanos, spentNanos: alert.spentNanos, requestId: entry.requestId, atMs: nowMs });
        }
      }
      // The row was just incremented in this transaction, so it is ours until
      // commit: the alert state advances exactly once per threshold.
      if (advanced) {
        this.#setAlerts.run({
          projectId: entry.projectId,
          lifetimeBps: alerts.lifetime.bps,
          lifetimeLimitNanos: alerts.lifetime.alertLimitNanos,
          dayBps: alerts.day.bps,
          dayLimitNanos: alerts.day.alertLimitNanos,
          monthBps: alerts.month.bps,
          monthLimitNanos: alerts.month.alertLimitNanos,
        });
      }
    }
    return { totals: totalsFromRow(totals), duplicate: false, requestId: entry.requestId, crossings, settledHoldNanos };
  }

  #reserve(request: HoldRequest, nowMs: number): ReserveOutcome {
    const state = this.#state(request.projectId, nowMs, true);
    if (request.requestId !== "") {
      const key = this.#selectReserveKey.get(request.projectId, request.requestId) as ReserveKeyRow | undefined;
      if (key !== undefined) {
        const replay = replayReserve(request, key, this.#selectHold.get(key.hold_id) as HoldRow | undefined, state, nowMs);
        if (!replay.ok) throw replay.error;
        return replay.value as ReserveOutcome;
      }
    }
    const decision = decideLimits(limitInputsOf(state), state.reservedNanos, request.estimatedCostNanos);
    if (!decision.allowed) return { decision, state, hold: null };
    if (state.activeHoldCount >= BigInt(activeHoldsPerProjectMax)) throw new HoldLimitError(request.projectId, activeHoldsPerProjectMax);
    const hold: Hold = {
      holdId: request.holdId,
      projectId: request.projectId,
      amountNanos: request.estimatedCostNanos,
      createdAtMs: nowMs,
      expiresAtMs: nowMs + request.ttlMs,
    };
    this.#insertHold.run({ ...hold, nowMs });
    // Without a limit nothing bounds the sum of holds but int64 itself.
    if (this.#addReservation.get({ projectId: hold.projectId, amountNanos: hold.amountNanos, nowMs }) === undefined) {
      throw new TotalOverflowError(request.projectId, "reserved_nanos");
    }
    if (request.requestId !== "") {
      this.#insertReserveKey.run({ ...hold, requestId: request.requestId, ttlMs: request.ttlMs, decisionJson: encodeDecision(decision), tokenFingerprint: request.tokenFingerprint ?? "" });
    }
    return { decision, state, hold };
  }

  #release(projectId: string, holdId: string, nowMs: number): Hold {
    const row = this.#deleteActiveHold.get({ holdId, projectId, nowMs }) as HoldRow | undefined;
    if (row === undefined) throw new HoldNotFoundError(holdId, this.#whyInactive(holdId, projectId, nowMs));
    this.#releaseReservation(row.project_id, row.amount_nanos, 1n, nowMs);
    return holdFromRow(row);
  }

  #releaseReservation(projectId: string, amountNanos: bigint, holdCount: bigint, nowMs: number): void {
    const after = this.#subtractReservation.get({ projectId, amountNanos, holdCount, nowMs }) as { reserved_nanos: bigint; hold_count: bigint } | undefined;
    // Every hold row was counted in when it was placed.
    if (after === undefined || after.reserved_nanos < 0n || after.hold_count < 0n) {
      throw new Error(`invariant: reservations of project "${projectId}" went negative or missing releasing ${amountNanos}`);
    }
  }

  #whyInactive(holdId: string, projectId: string, nowMs: number): string {
    const row = this.#selectHold.get(holdId) as HoldRow | undefined;
    // A hold of another project is reported like an unknown one: ids do not leak across projects.
    if (row === undefined || row.project_id !== projectId) return "no such hold in this project: never placed, or already settled, released, or expired and swept";
    if (row.expires_at_ms <= BigInt(nowMs)) return `it expired at ${new Date(Number(row.expires_at_ms)).toISOString()}`;
    return "it is active"; // unreachable: an active hold would have been taken
  }

  #sweepExpired(nowMs: number, countMax: number): number {
    const rows = this.#sweepHolds.all(nowMs, countMax) as Array<{ project_id: string; amount_nanos: bigint }>;
    const perProject = new Map<string, { amountNanos: bigint; holdCount: bigint }>();
    for (const row of rows) {
      const sum = perProject.get(row.project_id) ?? { amountNanos: 0n, holdCount: 0n };
      sum.amountNanos += row.amount_nanos;
      sum.holdCount += 1n;
      perProject.set(row.project_id, sum);
    }
    for (const [projectId, sum] of perProject) this.#releaseReservation(projectId, sum.amountNanos, sum.holdCount, nowMs);
    return rows.length;
  }



  #budgetRow(projectId: string): BudgetRow | undefined {
    let row = this.#budgets.get(projectId);
    if (row === undefined) {
      row = (this.#selectBudget.get(projectId) as BudgetRow | undefined) ?? null;
      this.#budgets.set(projectId, row);
    }
    return row ?? undefined;
  }

  /** Synchronous consistent read of everything a decision needs (inside a
   * batch: with the batch's budget cache; outside: a fresh read). */
  #state(projectId: string, nowMs: number, inBatch = false): BudgetState {
    let budgetRow: BudgetRow | undefined;
    let totalsRow: TotalsRow | undefined;
    let reservations: { reserved_nanos: bigint; hold_count: bigint } | undefined;
    if (inBatch) {
      budgetRow = this.#budgetRow(projectId);
      totalsRow = this.#selectTotals.get(projectId) as TotalsRow | undefined;
      reservations = this.#selectReservations.get(projectId) as typeof reservations;
    } else {
      let row = this.#stateRows.get(projectId);
      if (row === undefined) {
        row = readOrUnavailable(() => this.#selectState.get(projectId) as StateRow);
        if (row.r_hold_count === null || row.r_hold_count === 0n) {
          if (this.#stateRows.size >= sqliteStateCacheEntriesMax) this.#stateRows.delete(this.#stateRows.keys().next().value as string);
          this.#stateRows.set(projectId, row);
        }
      }
      if (row.b_project_id !== null) {
        budgetRow = {
          project_id: row.b_project_id,
          limit_nanos: row.b_limit_nanos as bigint,
          currency: row.b_currency as string,
          updated_at_ms: row.b_updated_at_ms as bigint,
          daily_limit_nanos: row.b_daily_limit_nanos as bigint,
          monthly_limit_nanos: row.b_monthly_limit_nanos as bigint,
          time_zone: row.b_time_zone as string,
          alert_thresholds_bps: row.b_alert_thresholds_bps as string,
        };
      }
      if (row.project_id !== null) totalsRow = row as unknown as TotalsRow;
      if (row.r_hold_count !== null) reservations = { reserved_nanos: row.r_reserved_nanos as bigint, hold_count: row.r_hold_count };
    }
    const budget = budgetRow === undefined ? unsetBudget(projectId) : budgetFromRow(budgetRow);
    const keys = periodKeys(nowMs, budget.timeZone);
    const period = (window: "day" | "month", key: string): PeriodTotals => {
      const stored = totalsRow === undefined ? "" : totalsRow[`${window}_period`];
      // The stored period is current, or (clock stepped back) later than now's:
      // its spend counts. An earlier one has ended: nothing spent yet in this one.
      const row = totalsRow !== undefined && stored >= key ? totalsRow : undefined;
      return {
        window,
        period: key,
        timeZone: budget.timeZone,
        totalCostNanos: row?.[`${window}_cost_nanos`] ?? 0n,
        inputTokens: row?.[`${window}_input_tokens`] ?? 0n,
        outputTokens: row?.[`${window}_output_tokens`] ?? 0n,
        recordCount: row?.[`${window}_record_count`] ?? 0n,
      };
    };
    let reservedNanos = 0n;
    let activeHoldCount = 0n;
    if (reservations !== undefined && reservations.hold_count > 0n) {
      const expired = this.#selectExpiredHolds.get(projectId, nowMs) as { amount_nanos: bigint; hold_count: bigint };
      reservedNanos = reservations.reserved_nanos - expired.amount_nanos;
      activeHoldCount = reservations.hold_count - expired.hold_count;
    }
    return {
      budget,
      totals: totalsRow === undefined ? zeroTotals(projectId) : totalsFromRow(totalsRow),
      day: period("day", keys.day),
      month: period("month", keys.month),
      reservedNanos,
      activeHoldCount,
    };
  }

  #duplicate(entry: CostEntry): OpResult {
    const row = this.#selectRecord.get(entry.projectId, entry.requestId) as RecordRow | undefined;
    if (row === undefined) throw new Error(`invariant: duplicate key ${entry.projectId}/${entry.requestId} has no record`);
    return duplicateOutcome(entry, row);
  }

  #overflowingQuantity(entry: CostEntry): string {
    const row = this.#selectTotals.get(entry.projectId) as TotalsRow;
    if (row.total_cost_nanos > int64Max - entry.costNanos) return "total_cost_nanos";
    if (row.input_tokens > int64Max - entry.inputTokens) return "input_tokens";
    if (row.output_tokens > int64Max - entry.outputTokens) return "output_tokens";
    return "record_count";
  }

  #setBudget(change: BudgetChange, nowMs: number): Budget {
    const current = this.#selectBudget.get(change.projectId) as BudgetRow | undefined;
    const currentCurrency = current?.currency ?? currencyDefault;
    const currency = change.currency ?? currentCurrency;
    if (currency !== currentCurrency) {
      const totals = this.#selectTotals.get(change.projectId) as TotalsRow | undefined;
      if (totals !== undefined && totals.record_count > 0n) throw new CurrencyLockedError(change.projectId, currentCurrency, currency);
    }
    const row = this.#upsertBudget.get({
      projectId: change.projectId,
      limitNanos: change.limitNanos,
      currency,
      nowMs,
      dailyLimitNanos: change.dailyLimitNanos ?? null,
      monthlyLimitNanos: change.monthlyLimitNanos ?? null,
      timeZone: change.timeZone ?? null,
      alertThresholdsBps: change.alertThresholdsBps == null ? null : change.alertThresholdsBps.join(","),
    }) as BudgetRow;
    return budgetFromRow(row);
  }

  async getTotals(projectId: string): Promise<ProjectTotals> {
    const row = readOrUnavailable(() => this.#selectTotals.get(projectId) as TotalsRow | undefined);
    return row === undefined ? zeroTotals(projectId) : totalsFromRow(row);
  }

  async getBudget(projectId: string): Promise<Budget> {
    const row = readOrUnavailable(() => this.#selectBudget.get(projectId) as BudgetRow | undefined);
    return row === undefined ? unsetBudget(projectId) : budgetFromRow(row);
  }

  async getBudgetAndTotals(projectId: string): Promise<{ budget: Budget; totals: ProjectTotals }> {
    // Two synchronous reads on the one connection: no write can come between them.
    const [budget, totals] = readOrUnavailable(() => [
      this.#selectBudget.get(projectId) as BudgetRow | undefined,
      this.#selectTotals.get(projectId) as TotalsRow | undefined,
    ]);
    return {
      budget: budget === undefined ? unsetBudget(projectId) : budgetFromRow(budget),
      totals: totals === undefined ? zeroTotals(projectId) : totalsFromRow(totals),
    };
  }

  async getBudgetState(projectId: string, nowMs: number): Promise<BudgetState> {
    return this.#state(projectId, nowMs);
  }

  async getBreakdown(projectId: string, dimension: Dimension, entriesMax: number): Promise<Breakdown> {
    const rows = this.#selectBreakdown[dimension].all(projectId, entriesMax + 1) as BreakdownRow[];
    return {
      dimension,
      truncated: rows.length > entriesMax,
      entries: rows.slice(0, entriesMax).map((row) => ({
        key: row.label,
        totalCostNanos: row.total_cost_nanos,
        inputTokens: row.input_tokens,
        outputTokens: row.output_tokens,
        recordCount: row.record_count,
        catalogCostNanos: row.catalog_cost_nanos,
        pricedCostNanos: row.priced_cost_nanos,
        unpricedRecordCount: row.unpriced_record_count,
      })),
    };
  }

  async listCostRecords(query: CostRecordQuery): Promise<CostRecordView[]> {
    const rows = this.#listRecords.all({
      projectId: query.projectId,
      startMs: query.startMs ?? Number.MIN_SAFE_INTEGER,
      endMs: query.endMs ?? Number.MAX_SAFE_INTEGER,
      afterMs: query.after?.recordedAtMs ?? Number.MIN_SAFE_INTEGER,
      afterId: query.after?.id ?? -1n,
      limit: query.limit,
    }) as RecordRow[];
    return rows.map(recordViewFromRow);
  }

  async getHold(holdId: string): Promise<Hold | null> {
    const row = this.#selectHold.get(holdId) as HoldRow | undefined;
    return row === undefined ? null : holdFromRow(row);
  }

  async deleteExpiredHolds(nowMs: number, countMax: number): Promise<number> {
    if (this.#writes !== undefined) return this.#writes.deleteExpiredHolds(nowMs, countMax);
    return this.deleteExpiredHoldsSync(nowMs, countMax);
  }

  async deleteReserveKeysBefore(beforeMs: number, countMax: number): Promise<number> {
    if (this.#writes !== undefined) return this.#writes.deleteReserveKeysBefore(beforeMs, countMax);
    return readOrUnavailable(() => this.deleteReserveKeysBeforeSync(beforeMs, countMax));
  }

  async deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number> {
    if (this.#writes !== undefined) return this.#writes.deleteRecordsBefore(beforeMs, countMax);
    return readOrUnavailable(() => this.deleteRecordsBeforeSync(beforeMs, countMax));
  }

  async listProjects(query: ProjectListQuery, nowMs: number): Promise<ProjectEntry[]> {
    const afterId = query.after?.projectId ?? "";
    const rows = (
      query.order === ProjectOrder.projectId
        ? this.#listById.all({ afterId, limit: query.limit, archived: query.includeArchived === true ? 1 : 0 })
        : this.#listBySpent.all({ first: query.after === null ? 1 : 0, afterSpent: query.after?.spentNanos ?? 0n, afterId, limit: query.limit, archived: query.includeArchived === true ? 1 : 0 })
    ) as Array<{ project_id: string }>;
    // All reads are synchronous on the one connection: no write comes between them.
    const reserved = new Map<string, { reserved_nanos: bigint; hold_count: bigint }>();
    if (rows.length > 0) {
      const found = this.#reservationsOf.all({ ids: JSON.stringify(rows.map((row) => row.project_id)), nowMs }) as Array<{ project_id: string; reserved_nanos: bigint; hold_count: bigint }>;
      for (const row of found) reserved.set(row.project_id, row);
    }
    return rows.map(({ project_id: projectId }) => {
      const budget = this.#selectBudget.get(projectId) as BudgetRow | undefined;
      const totals = this.#selectTotals.get(projectId) as TotalsRow | undefined;
      const holds = reserved.get(projectId);
      return {
        budget: budget === undefined ? unsetBudget(projectId) : budgetFromRow(budget),
        totals: totals === undefined ? zeroTotals(projectId) : totalsFromRow(totals),
        reservedNanos: holds?.reserved_nanos ?? 0n,
        activeHoldCount: holds?.hold_count ?? 0n,
        archivedAtMs: this.#removal.archivedAtMs(projectId),
      };
    });
  }

  async reservedByCurrency(nowMs: number): Promise<CurrencyReserved[]> {
    // Synchronous reads on the one connection: one consistent snapshot.
    const all = this.#reservedAll.get() as { reserved: number; holds: number };
    const others = this.#reservedOtherCurrencies.all() as Array<{ currency: string; reserved: number; holds: number }>;
    const expired = this.#expiredByCurrency.all(nowMs) as Array<{ currency: string; reserved: number; holds: bigint }>;
    // Hold rows (expired ones included) per currency; the default currency's
    // share is the difference.
    const byCurrency = new Map<string, CurrencyReserved>([[currencyDefault, { currency: currencyDefault, reservedNanos: all.reserved, activeHolds: all.holds }]]);
    for (const row of others) {
      const base = byCurrency.get(currencyDefault)!;
      base.reservedNanos -= row.reserved;
      base.activeHolds -= row.holds;
      byCurrency.set(row.currency, { currency: row.currency, reservedNanos: row.reserved, activeHolds: row.holds });
    }
    const result: CurrencyReserved[] = [];
    for (const entry of byCurrency.values()) {
      if (entry.activeHolds <= 0) continue; // no hold rows in this currency
      const gone = expired.find((row) => row.currency === entry.currency);
      // Float differences of int64 sums: clamp rounding below zero away.
      result.push({
        currency: entry.currency,
        reservedNanos: Math.max(0, entry.reservedNanos - (gone?.reserved ?? 0)),
        activeHolds: Math.max(0, entry.activeHolds - Number(gone?.holds ?? 0n)),
      });
    }
    return result.sort((a, b) => (a.currency < b.currency ? -1 : a.currency > b.currency ? 1 : 0));
  }

  async spendByCurrency(): Promise<CurrencySpend[]> {
    const all = this.#spendAll.get() as { spent: number; projects: bigint };
    const others = this.#spendOtherCurrencies.all() as Array<{ currency: string; spent: number; projects: bigint }>;
    const defaultCurrency: CurrencySpend = { currency: currencyDefault, totalCostNanos: all.spent, projects: Number(all.projects) };
    const result: CurrencySpend[] = [];
    for (const row of others) {
      defaultCurrency.totalCostNanos -= row.spent;
      defaultCurrency.projects -= Number(row.projects);
      result.push({ currency: row.currency, totalCostNanos: row.spent, projects: Number(row.projects) });
    }
    if (defaultCurrency.projects > 0) result.push({ ...defaultCurrency, totalCostNanos: Math.max(0, defaultCurrency.totalCostNanos) });
    return result.sort((a, b) => (a.currency < b.currency ? -1 : a.currency > b.currency ? 1 : 0));
  }

  async close(): Promise<void> {
    try {
      await this.#writes?.close();
    } finally {
      await this.#close();
    }
  }

  /** For tests and tools: the native handle (e.g. to inspect the ledger). */
  get native(): Database.Database {
    return this.#db;
  }
}

/** A read the database could not serve (busy beyond busy_timeout, I/O error,
 * closed handle) is UNAVAILABLE to the caller, like a failed write; anything
 * else is a bug and stays one. */
/** Listing filter: archived projects only when @archived = 1 (include_archived). */
const notArchived = (alias: string) => `(@archived = 1 OR NOT EXISTS (SELECT 1 FROM project_archives a WHERE a.project_id = ${alias}.project_id))`;

function readOrUnavailable<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if ((typeof code === "string" && code.startsWith("SQLITE_")) || /database connection is not open/.test((error as Error).message)) {
      throw new StoreUnavailableError(error, "read");
    }
    throw error;
  }
}
