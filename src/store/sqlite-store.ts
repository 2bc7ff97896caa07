// LedgerStore on SQLite. MikroORM owns the connection, the entities and the
// migrations; the hot path runs prepared statements on the connection's native
// better-sqlite3 handle, inside one synchronous transaction per batch. Being
// synchronous, no other query can interleave with an open transaction on
// SQLite's single connection, and a batch costs no await per statement
// (docs/decisions/0001-storage-hot-path.md).
//
// Every increment happens in SQL (`total = total + ?`, guarded against int64
// overflow by the WHERE clause of the upsert), never read-modify-write in JS.
import type Database from "better-sqlite3";
import { currencyDefault } from "../limits.ts";
import { int64Max } from "../ledger/money.ts";
import { CurrencyLockedError, IdempotencyConflictError, TotalOverflowError } from "../ledger/errors.ts";
import { ProjectOrder, type CurrencySpend, type ProjectEntry, type ProjectListQuery } from "../ledger/projects.ts";
import type { LedgerStore, OpResult, WriteOp } from "../ledger/store.ts";
import { sameEntry, zeroTotals, type Budget, type BudgetChange, type CostEntry, type ProjectTotals, type RecordOutcome } from "../ledger/types.ts";

interface TotalsRow {
  project_id: string;
  total_cost_nanos: bigint;
  input_tokens: bigint;
  output_tokens: bigint;
  record_count: bigint;
  updated_at_ms: bigint;
}
interface RecordRow {
  project_id: string;
  request_id: string;
  cost_nanos: bigint;
  input_tokens: bigint;
  output_tokens: bigint;
  agent_id: string;
  model: string;
  recorded_at_ms: bigint;
  total_cost_nanos_after: bigint;
  input_tokens_after: bigint;
  output_tokens_after: bigint;
  record_count_after: bigint;
}
interface BudgetRow {
  project_id: string;
  limit_nanos: bigint;
  currency: string;
  updated_at_ms: bigint;
}

/** Thrown inside the per-op savepoint to roll it back when the request_id exists. */
class DuplicateKey extends Error {}

const INT64_MAX = int64Max.toString();

export class SqliteLedgerStore implements LedgerStore {
  readonly #db: Database.Database;
  readonly #close: () => Promise<void>;
  readonly #upsertTotals: Database.Statement;
  readonly #insertRecord: Database.Statement;
  readonly #selectRecord: Database.Statement;
  readonly #selectTotals: Database.Statement;
  readonly #selectBudget: Database.Statement;
  readonly #upsertBudget: Database.Statement;
  readonly #deleteBefore: Database.Statement;
  readonly #listById: Database.Statement;
  readonly #listBySpent: Database.Statement;
  readonly #spendAll: Database.Statement;
  readonly #spendOtherCurrencies: Database.Statement;
  readonly #batch: Database.Transaction<(ops: readonly WriteOp[], nowMs: number) => OpResult[]>;
  readonly #applyRecord: (entry: CostEntry, nowMs: number) => RecordOutcome;
  readonly #applyBudget: (change: BudgetChange, nowMs: number) => Budget;

  /** `db` is the native handle of an initialised, migrated connection; `close`
   * releases it (the ORM's close). */
  constructor(db: Database.Database, close: () => Promise<void>) {
    this.#db = db;
    this.#close = close;
    const prepare = (sql: string) => db.prepare(sql).safeIntegers(true);
    this.#upsertTotals = prepare(`
      INSERT INTO project_totals (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms)
      VALUES (@projectId, @costNanos, @inputTokens, @outputTokens, 1, @nowMs, @nowMs)
      ON CONFLICT (project_id) DO UPDATE SET
        total_cost_nanos = total_cost_nanos + excluded.total_cost_nanos,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        record_count = record_count + 1,
        updated_at_ms = excluded.updated_at_ms
      WHERE total_cost_nanos <= ${INT64_MAX} - excluded.total_cost_nanos
        AND input_tokens <= ${INT64_MAX} - excluded.input_tokens
        AND output_tokens <= ${INT64_MAX} - excluded.output_tokens
        AND record_count < ${INT64_MAX}
      RETURNING project_id, total_cost_nanos, input_tokens, output_tokens, record_count, updated_at_ms`);
    this.#insertRecord = prepare(`
      INSERT INTO cost_records (project_id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, recorded_at_ms,
        total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after)
      VALUES (@projectId, @requestId, @costNanos, @inputTokens, @outputTokens, @agentId, @model, @nowMs,
        @totalAfter, @inputAfter, @outputAfter, @countAfter)
      ON CONFLICT (project_id, request_id) DO NOTHING
      RETURNING id`);
    this.#selectRecord = prepare(`SELECT * FROM cost_records WHERE project_id = ? AND request_id = ?`);
    this.#selectTotals = prepare(`SELECT * FROM project_totals WHERE project_id = ?`);
    this.#selectBudget = prepare(`SELECT * FROM project_budgets WHERE project_id = ?`);
    this.#upsertBudget = prepare(`
      INSERT INTO project_budgets (project_id, limit_nanos, currency, created_at_ms, updated_at_ms)
      VALUES (@projectId, @limitNanos, @currency, @nowMs, @nowMs)
      ON CONFLICT (project_id) DO UPDATE SET
        limit_nanos = excluded.limit_nanos, currency = excluded.currency, updated_at_ms = excluded.updated_at_ms
      RETURNING project_id, limit_nanos, currency, updated_at_ms`);
    this.#deleteBefore = prepare(`
      DELETE FROM cost_records WHERE id IN (
        SELECT id FROM cost_records WHERE recorded_at_ms < ? ORDER BY recorded_at_ms LIMIT ?)`);

    // Project ids come from both tables (a project may have only a budget, or
    // only costs). By id: each arm reads at most @limit rows from its primary key
    // index after the cursor. By spend: a full scan of project_totals with a
    // top-N sort (no index on total_cost_nanos: it would cost every RecordCost an
    // extra index update; see docs/decisions/0003-operator-surfaces.md).
    this.#listById = prepare(`
      SELECT project_id FROM (SELECT project_id FROM project_totals WHERE project_id > @afterId ORDER BY project_id LIMIT @limit)
      UNION
      SELECT project_id FROM (SELECT project_id FROM project_budgets WHERE project_id > @afterId ORDER BY project_id LIMIT @limit)
      ORDER BY project_id LIMIT @limit`);
    // Each arm is cut to @limit by its own top-N sort before the merge.
    this.#listBySpent = prepare(`
      SELECT project_id, spent FROM (
        SELECT project_id, total_cost_nanos AS spent FROM project_totals
        WHERE @first = 1 OR total_cost_nanos < @afterSpent OR (total_cost_nanos = @afterSpent AND project_id > @afterId)
        ORDER BY total_cost_nanos DESC, project_id LIMIT @limit)
      UNION ALL
      SELECT project_id, spent FROM (
        SELECT b.project_id AS project_id, 0 AS spent FROM project_budgets b
        WHERE NOT EXISTS (SELECT 1 FROM project_totals t WHERE t.project_id = b.project_id)
          AND (@first = 1 OR @afterSpent > 0 OR b.project_id > @afterId)
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

    // Nested better-sqlite3 transactions are savepoints: an op that throws rolls
    // back only itself, and the batch goes on.
    this.#applyRecord = db.transaction((entry: CostEntry, nowMs: number) => this.#record(entry, nowMs));
    this.#applyBudget = db.transaction((change: BudgetChange, nowMs: number) => this.#setBudget(change, nowMs));
    this.#batch = db.transaction((ops: readonly WriteOp[], nowMs: number) => ops.map((op) => this.#applyOne(op, nowMs)));
  }

  async commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]> {
    // BEGIN IMMEDIATE takes the write lock up front, so a second process on the
    // same file waits (busy_timeout) instead of failing mid-transaction.
    return this.#batch.immediate(ops, nowMs);
  }

  #applyOne(op: WriteOp, nowMs: number): OpResult {
    try {
      if (op.kind === "record") {
        try {
          return { ok: true, value: this.#applyRecord(op.entry, nowMs) };
        } catch (error) {
          if (error instanceof DuplicateKey) return this.#duplicate(op.entry);
          throw error;
        }
      }
      return { ok: true, value: this.#applyBudget(op.change, nowMs) };
    } catch (error) {
      if (error instanceof TotalOverflowError || error instanceof IdempotencyConflictError || error instanceof CurrencyLockedError) {
        return { ok: false, error };
      }
      // Anything else (I/O, constraint we did not expect) fails the whole batch.
      throw error;
    }
  }

  #record(entry: CostEntry, nowMs: number): RecordOutcome {
    const params = { ...entry, nowMs };
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
    if (inserted === undefined) throw new DuplicateKey(); // rolls back the increment
    return { totals: totalsFromRow(totals), duplicate: false, requestId: entry.requestId };
  }

  #duplicate(entry: CostEntry): OpResult {
    const row = this.#selectRecord.get(entry.projectId, entry.requestId) as RecordRow | undefined;
    if (row === undefined) throw new Error(`invariant: duplicate key ${entry.projectId}/${entry.requestId} has no record`);
    const original: CostEntry = {
      projectId: row.project_id,
      requestId: row.request_id,
      costNanos: row.cost_nanos,
      inputTokens: row.input_tokens,
      outputTokens: row.output_tokens,
      agentId: row.agent_id,
      model: row.model,
    };
    if (!sameEntry(original, entry)) {
      return { ok: false, error: new IdempotencyConflictError(entry.projectId, entry.requestId, describeDifference(original, entry)) };
    }
    const totals: ProjectTotals = {
      projectId: row.project_id,
      totalCostNanos: row.total_cost_nanos_after,
      inputTokens: row.input_tokens_after,
      outputTokens: row.output_tokens_after,
      recordCount: row.record_count_after,
      updatedAtMs: Number(row.recorded_at_ms),
    };
    return { ok: true, value: { totals, duplicate: true, requestId: entry.requestId } };
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
    const row = this.#upsertBudget.get({ projectId: change.projectId, limitNanos: change.limitNanos, currency, nowMs }) as BudgetRow;
    return budgetFromRow(row);
  }

  async getTotals(projectId: string): Promise<ProjectTotals> {
    const row = this.#selectTotals.get(projectId) as TotalsRow | undefined;
    return row === undefined ? zeroTotals(projectId) : totalsFromRow(row);
  }

  async getBudget(projectId: string): Promise<Budget> {
    const row = this.#selectBudget.get(projectId) as BudgetRow | undefined;
    return row === undefined ? unsetBudget(projectId) : budgetFromRow(row);
  }

  async getBudgetAndTotals(projectId: string): Promise<{ budget: Budget; totals: ProjectTotals }> {
    // Two synchronous reads on the one connection: no write can come between them.
    const budget = this.#selectBudget.get(projectId) as BudgetRow | undefined;
    const totals = this.#selectTotals.get(projectId) as TotalsRow | undefined;
    return {
      budget: budget === undefined ? unsetBudget(projectId) : budgetFromRow(budget),
      totals: totals === undefined ? zeroTotals(projectId) : totalsFromRow(totals),
    };
  }

  async deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number> {
    return this.#deleteBefore.run(beforeMs, countMax).changes;
  }

  async listProjects(query: ProjectListQuery): Promise<ProjectEntry[]> {
    const afterId = query.after?.projectId ?? "";
    const rows = (
      query.order === ProjectOrder.projectId
        ? this.#listById.all({ afterId, limit: query.limit })
        : this.#listBySpent.all({ first: query.after === null ? 1 : 0, afterSpent: query.after?.spentNanos ?? 0n, afterId, limit: query.limit })
    ) as Array<{ project_id: string }>;
    // All reads are synchronous on the one connection: no write comes between them.
    return rows.map(({ project_id: projectId }) => {
      const budget = this.#selectBudget.get(projectId) as BudgetRow | undefined;
      const totals = this.#selectTotals.get(projectId) as TotalsRow | undefined;
      return {
        budget: budget === undefined ? unsetBudget(projectId) : budgetFromRow(budget),
        totals: totals === undefined ? zeroTotals(projectId) : totalsFromRow(totals),
      };
    });
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
    await this.#close();
  }

  /** For tests and tools: the native handle (e.g. to inspect the ledger). */
  get native(): Database.Database {
    return this.#db;
  }
}

function totalsFromRow(row: TotalsRow): ProjectTotals {
  return {
    projectId: row.project_id,
    totalCostNanos: row.total_cost_nanos,
    inputTokens: row.input_tokens,
    outputTokens: row.output_tokens,
    recordCount: row.record_count,
    updatedAtMs: Number(row.updated_at_ms),
  };
}

function budgetFromRow(row: BudgetRow): Budget {
  return {
    projectId: row.project_id,
    limitNanos: row.limit_nanos,
    currency: row.currency,
    configured: true,
    updatedAtMs: Number(row.updated_at_ms),
  };
}

function unsetBudget(projectId: string): Budget {
  return { projectId, limitNanos: 0n, currency: currencyDefault, configured: false, updatedAtMs: null };
}

function describeDifference(original: CostEntry, retry: CostEntry): string {
  const fields = ["costNanos", "inputTokens", "outputTokens", "agentId", "model"] as const;
  return fields
    .filter((field) => original[field] !== retry[field])
    .map((field) => `${field}: recorded ${String(original[field])}, now ${String(retry[field])}`)
    .join("; ");
}
