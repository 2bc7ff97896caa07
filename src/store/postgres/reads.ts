// The PostgreSQL store's reads: each one named statement on the pool (one
// snapshot). A database that cannot be reached is UNAVAILABLE to the caller;
// anything else is a bug and stays one.
import type { Pool, QueryResultRow } from "pg";
import { activeHolds } from "../../ledger/budget-state.ts";
import type { CurrencyReserved, CurrencySpend, ProjectEntry, ProjectListQuery } from "../../ledger/projects.ts";
import { ProjectOrder } from "../../ledger/projects.ts";
import {
  zeroTotals,
  type Breakdown,
  type Budget,
  type BudgetState,
  type CostRecordQuery,
  type CostRecordView,
  type Dimension,
  type Hold,
  type ProjectTotals,
} from "../../ledger/types.ts";
import { currencyDefault } from "../../limits.ts";
import {
  budgetFromRow,
  holdFromRow,
  recordViewFromRow,
  totalsFromRow,
  unsetBudget,
  type BudgetRow,
  type HoldRow,
  type Int8,
  type RecordRow,
  type TotalsRow,
} from "../rows.ts";
import { budgetAndTotalsFromRow } from "./columns.ts";
import { unavailableOr } from "./errors.ts";
import {
  breakdownSql,
  listByIdSql,
  listBySpentSql,
  listRecordsSql,
  reservedByCurrencySql,
  selectBudgetAndTotalsSql,
  selectBudgetSql,
  selectHoldSql,
  selectTotalsSql,
  spendByCurrencySql,
} from "./read-statements.ts";
import { readState } from "./state.ts";

type ListedRow = Record<string, unknown> & {
  project_id: string;
  r_reserved_nanos: Int8 | null;
  r_hold_count: Int8 | null;
  expired_nanos: Int8;
  expired_count: Int8;
  x_archived_at_ms: Int8 | null;
};
type BreakdownRow = {
  label: string;
  total_cost_nanos: Int8;
  input_tokens: Int8;
  output_tokens: Int8;
  record_count: Int8;
  catalog_cost_nanos: Int8;
  priced_cost_nanos: Int8;
  unpriced_record_count: Int8;
};

export class PostgresReads {
  readonly #pool: Pool;

  constructor(pool: Pool) {
    this.#pool = pool;
  }

  /** A statement outside a batch (reads, retention). */
  async query<R extends object>(name: string, sql: string, params: unknown[]) {
    try {
      // Named: parsed and planned once per connection.
      return await this.#pool.query<R & QueryResultRow>({ name, text: sql, values: params });
    } catch (error) {
      throw unavailableOr(error, "read");
    }
  }

  async getTotals(projectId: string): Promise<ProjectTotals> {
    const { rows } = await this.query<TotalsRow>("tally_select_totals", selectTotalsSql, [projectId]);
    const row = rows[0];
    return row === undefined ? zeroTotals(projectId) : totalsFromRow(row, projectId);
  }

  async getBudget(projectId: string): Promise<Budget> {
    const { rows } = await this.query<BudgetRow>("tally_select_budget", selectBudgetSql, [projectId]);
    const row = rows[0];
    return row === undefined ? unsetBudget(projectId) : budgetFromRow(row);
  }

  async getBudgetAndTotals(projectId: string): Promise<{ budget: Budget; totals: ProjectTotals }> {
    const { rows } = await this.query<Record<string, unknown>>("tally_select_budget_and_totals", selectBudgetAndTotalsSql, [projectId]);
    const row = rows[0];
    if (row === undefined) throw new Error("invariant: the budget-and-totals read returned no row");
    return budgetAndTotalsFromRow(projectId, row);
  }

  async getBudgetState(projectId: string, nowMs: number): Promise<BudgetState> {
    try {
      return await readState(this.#pool, projectId, nowMs);
    } catch (error) {
      throw unavailableOr(error, "read");
    }
  }

  async getBreakdown(projectId: string, dimension: Exclude<Dimension, "child">, entriesMax: number): Promise<Breakdown> {
    const column = dimension === "agent" ? "agent_id" : "model";
    const { rows } = await this.query<BreakdownRow>(`tally_breakdown_${column}`, breakdownSql(column), [projectId, entriesMax + 1]);
    return {
      dimension,
      truncated: rows.length > entriesMax,
      entries: rows.slice(0, entriesMax).map((row) => ({
        key: row.label,
        totalCostNanos: BigInt(row.total_cost_nanos),
        inputTokens: BigInt(row.input_tokens),
        outputTokens: BigInt(row.output_tokens),
        recordCount: BigInt(row.record_count),
        catalogCostNanos: BigInt(row.catalog_cost_nanos),
        pricedCostNanos: BigInt(row.priced_cost_nanos),
        unpricedRecordCount: BigInt(row.unpriced_record_count),
      })),
    };
  }

  async listCostRecords(query: CostRecordQuery): Promise<CostRecordView[]> {
    const { rows } = await this.query<RecordRow & { id: Int8 }>("tally_list_records", listRecordsSql, [
      query.projectId,
      String(query.startMs ?? Number.MIN_SAFE_INTEGER),
      String(query.endMs ?? Number.MAX_SAFE_INTEGER),
      String(query.after?.recordedAtMs ?? Number.MIN_SAFE_INTEGER),
      (query.after?.id ?? -1n).toString(),
      query.limit,
    ]);
    return rows.map(recordViewFromRow);
  }

  async getHold(holdId: string): Promise<Hold | null> {
    const { rows } = await this.query<HoldRow>("tally_select_hold", selectHoldSql, [holdId]);
    const row = rows[0];
    return row === undefined ? null : holdFromRow(row);
  }

  async listProjects(query: ProjectListQuery, nowMs: number): Promise<ProjectEntry[]> {
    const afterId = query.after?.projectId ?? "";
    // One statement: every entry's budget, totals and holds come from one snapshot.
    const { rows } =
      query.order === ProjectOrder.projectId
        ? await this.query<ListedRow>("tally_list_by_id", listByIdSql, [
            afterId,
            query.limit,
            String(nowMs),
            query.includeArchived === true,
          ])
        : await this.query<ListedRow>("tally_list_by_spent", listBySpentSql, [
            query.after === null,
            (query.after?.spentNanos ?? 0n).toString(),
            afterId,
            query.limit,
            String(nowMs),
            query.includeArchived === true,
          ]);
    return rows.map((row) => ({
      ...budgetAndTotalsFromRow(row.project_id, row),
      ...activeHolds(
        row.r_reserved_nanos === null || row.r_hold_count === null
          ? null
          : { reservedNanos: BigInt(row.r_reserved_nanos), holdCount: BigInt(row.r_hold_count) },
        { amountNanos: BigInt(row.expired_nanos), holdCount: BigInt(row.expired_count) },
      ),
      archivedAtMs: row.x_archived_at_ms === null ? null : Number(row.x_archived_at_ms),
    }));
  }

  async reservedByCurrency(nowMs: number): Promise<CurrencyReserved[]> {
    const { rows } = await this.query<{ currency: string; reserved: number; holds: number }>(
      "tally_reserved_by_currency",
      reservedByCurrencySql,
      [currencyDefault, String(nowMs)],
    );
    return rows.map((row) => ({
      currency: row.currency,
      reservedNanos: Math.max(0, Number(row.reserved)),
      activeHolds: Math.max(0, Number(row.holds)),
    }));
  }

  async spendByCurrency(): Promise<CurrencySpend[]> {
    const { rows } = await this.query<{ currency: string; spent: number; projects: Int8 }>("tally_spend_by_currency", spendByCurrencySql, [
      currencyDefault,
    ]);
    return rows.map((row) => ({ currency: row.currency, totalCostNanos: Number(row.spent), projects: Number(row.projects) }));
  }
}
